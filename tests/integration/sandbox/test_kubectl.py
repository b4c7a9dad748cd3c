"""The real kubectl against the emulator (or a real cluster, see tests/fixtures/kubectl.py).

Each test reads what a user reads: kubectl's output and exit code.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid

import pytest
import yaml

from tests.fixtures.kubectl import Cluster, pod_yaml

pytestmark = pytest.mark.integration

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ")


def columns(table_text: str) -> list[list[str]]:
    """kubectl's table output split into cells (columns are separated by 2+ spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in table_text.strip().splitlines()]


def row(cluster: Cluster, name: str, *args: str) -> dict[str, str]:
    header, *rows = columns(cluster.ok("get", "pod", name, *args))
    assert len(rows) == 1
    return dict(zip(header, rows[0], strict=True))


def wait_for(cluster: Cluster, name: str, condition: str, timeout: str = "60s") -> None:
    cluster.ok("wait", f"--for={condition}", f"pod/{name}", f"--timeout={timeout}", timeout=90)


def test_version_reports_the_server(cluster: Cluster) -> None:
    version = json.loads(cluster.ok("version", "-o", "json"))
    assert version["serverVersion"]["major"] == "1"
    assert version["serverVersion"]["gitVersion"].startswith("v1.")


def test_api_resources_lists_pods_with_their_short_name(cluster: Cluster) -> None:
    header, *rows = columns(cluster.ok("api-resources", "--api-group="))
    pods = next(dict(zip(header, r, strict=True)) for r in rows if r[0] == "pods")
    assert pods == {
        "NAME": "pods",
        "SHORTNAMES": "po",
        "APIVERSION": "v1",
        "NAMESPACED": "true",
        "KIND": "Pod",
    }


def test_api_resources_lists_nodes_and_namespaces_as_cluster_scoped(cluster: Cluster) -> None:
    header, *rows = columns(cluster.ok("api-resources", "--api-group=", "--namespaced=false"))
    found = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert found["nodes"]["SHORTNAMES"] == "no" and found["nodes"]["KIND"] == "Node"
    assert found["namespaces"]["SHORTNAMES"] == "ns" and found["namespaces"]["KIND"] == "Namespace"


def test_get_nodes_shows_ready_nodes(cluster: Cluster) -> None:
    header, *rows = columns(cluster.ok("get", "nodes"))
    assert header == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert rows and all(r[1] == "Ready" and r[4].startswith("v1.") for r in rows)
    wide_header, *_ = columns(cluster.ok("get", "nodes", "-o", "wide"))
    assert wide_header[5:] == [
        "INTERNAL-IP",
        "EXTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ]


def test_describe_node_lists_the_pods_running_on_it(cluster: Cluster) -> None:
    name = cluster.name("on-node")
    cluster.create_pod(name, "sleep 60")
    wait_for(cluster, name, "condition=Ready")
    node = cluster.ok("get", "pod", name, "-o", "jsonpath={.spec.nodeName}")
    described = cluster.ok("describe", "node", node)
    assert re.search(rf"^Name:\s+{re.escape(node)}$", described, re.MULTILINE)
    assert re.search(r"^\s+Ready\s+True\s", described, re.MULTILINE)
    pods = described.split("Non-terminated Pods:", 1)[1].split("Allocated resources:", 1)[0]
    assert re.search(rf"^\s+{cluster.namespace}\s+{name}\s", pods, re.MULTILINE)


def test_create_namespace_get_it_active_then_delete_it(cluster: Cluster) -> None:
    namespace = f"team-{uuid.uuid4().hex[:6]}"
    assert cluster.ok("create", "namespace", namespace) == f"namespace/{namespace} created\n"
    try:
        header, *rows = columns(cluster.ok("get", "namespace", namespace))
        assert header == ["NAME", "STATUS", "AGE"] and rows[0][:2] == [namespace, "Active"]
        again = cluster.kubectl("create", "namespace", namespace)
        assert again.returncode == 1
        assert f'namespaces "{namespace}" already exists' in again.stderr
        cluster.ok("run", "inside", "--image=busybox:1.36", "--restart=Never",
                   f"--namespace={namespace}", "--", "sleep", "60")  # fmt: skip
    finally:  # kubectl waits until the namespace, and the pod in it, are gone
        deleted = cluster.ok("delete", "namespace", namespace, "--timeout=60s", timeout=90)
    assert deleted == f'namespace "{namespace}" deleted\n'
    gone = cluster.kubectl("get", "namespace", namespace)
    assert gone.returncode == 1 and f'namespaces "{namespace}" not found' in gone.stderr


def test_auth_can_i_and_whoami_answer(cluster: Cluster) -> None:
    assert cluster.ok("auth", "can-i", "create", "pods") == "yes\n"
    assert cluster.ok("auth", "can-i", "delete", "pods", "--subresource=log") == "yes\n"
    header, *rows = columns(cluster.ok("auth", "whoami"))
    assert header == ["ATTRIBUTE", "VALUE"] and rows[0][0] == "Username"
    if cluster.emulator is not None:  # the sandbox's one user; a cluster names its own
        assert rows[0][1] == "sandbox-admin"
        assert "[*]" in cluster.ok("auth", "can-i", "--list")


def test_top_shows_a_running_pod_and_the_node(cluster: Cluster) -> None:
    if cluster.emulator is None:
        pytest.skip("kubectl top needs the cluster's metrics-server, which may lag or be absent")
    name = cluster.name("top")
    cluster.create_pod(name, "sleep 60")
    wait_for(cluster, name, "condition=Ready")
    header, *rows = columns(cluster.ok("top", "pod", name))
    assert header == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    [(shown, cpu, memory)] = rows
    assert shown == name and cpu.endswith("m") and memory.endswith(("Ki", "Mi"))
    header, *rows = columns(cluster.ok("top", "node"))
    assert header == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    assert [row[0] for row in rows] == ["sandbox-node"]


def test_the_default_namespace_may_not_be_deleted(cluster: Cluster) -> None:
    refused = cluster.kubectl("delete", "namespace", "default")
    assert refused.returncode == 1
    assert 'namespaces "default" is forbidden: this namespace may not be deleted' in refused.stderr


def test_create_namespace_with_a_bad_name_says_why(cluster: Cluster) -> None:
    result = cluster.kubectl("create", "namespace", "Not_A_Label")
    assert result.returncode == 1
    assert 'The Namespace "Not_A_Label" is invalid: metadata.name: Invalid value' in result.stderr


def test_cluster_info_names_the_control_plane(cluster: Cluster) -> None:
    server = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    shown = re.sub(r"\x1b\[[0-9;]*m", "", cluster.ok("cluster-info"))  # without its colours
    assert shown.splitlines()[0] == f"Kubernetes control plane is running at {server}"


def test_the_api_server_has_its_kubernetes_service(cluster: Cluster) -> None:
    cells = columns(cluster.ok("get", "service", "kubernetes", "--namespace=default"))
    assert cells[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert cells[1][:2] == ["kubernetes", "ClusterIP"] and cells[1][4] == "443/TCP"


def test_get_pods_in_an_empty_namespace_says_so(cluster: Cluster) -> None:
    namespace = f"empty-{uuid.uuid4().hex[:6]}"
    result = cluster.kubectl("get", "pods", f"--namespace={namespace}")
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr.strip() == f"No resources found in {namespace} namespace."


def test_get_a_missing_pod_is_not_found(cluster: Cluster) -> None:
    result = cluster.kubectl("get", "pod", "no-such-pod")
    assert result.returncode == 1
    assert 'Error from server (NotFound): pods "no-such-pod" not found' in result.stderr


def test_running_pod_shows_ready_running_and_wide_columns(cluster: Cluster) -> None:
    name = cluster.name("runs")
    cluster.create_pod(name, "echo started; sleep 60")
    wait_for(cluster, name, "condition=Ready")
    cells = row(cluster, name)
    assert list(cells) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert (cells["NAME"], cells["READY"], cells["STATUS"], cells["RESTARTS"]) == (
        name,
        "1/1",
        "Running",
        "0",
    )
    assert re.fullmatch(r"\d+s", cells["AGE"])
    wide = row(cluster, name, "-o", "wide")
    assert list(wide)[5:] == ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", wide["IP"])
    assert wide["NODE"] not in ("", "<none>")
    cluster.ok("delete", "pod", name, "--grace-period=0", "--force")


@pytest.mark.parametrize(("script", "status"), [("exit 0", "Completed"), ("exit 3", "Error")])
def test_finished_pod_status_is_completed_or_error(
    cluster: Cluster, script: str, status: str
) -> None:
    name = cluster.name("ends")
    cluster.create_pod(name, script)
    phase = "Succeeded" if status == "Completed" else "Failed"
    wait_for(cluster, name, f"jsonpath={{.status.phase}}={phase}")
    cells = row(cluster, name)
    assert (cells["READY"], cells["STATUS"], cells["RESTARTS"]) == ("0/1", status, "0")


def test_logs_with_tail_timestamps_limit_and_since(cluster: Cluster) -> None:
    name = cluster.name("logs")
    cluster.create_pod(name, "echo one; echo two; echo three")
    wait_for(cluster, name, "jsonpath={.status.phase}=Succeeded")
    assert cluster.ok("logs", name) == "one\ntwo\nthree\n"
    assert cluster.ok("logs", name, "--tail=1") == "three\n"
    assert cluster.ok("logs", name, "--limit-bytes=6") == "one\ntw"
    assert cluster.ok("logs", name, "--since=1h") == "one\ntwo\nthree\n"
    stamped = cluster.ok("logs", name, "--timestamps").splitlines()
    assert [TIMESTAMP.sub("", line) for line in stamped] == ["one", "two", "three"]
    assert all(TIMESTAMP.match(line) for line in stamped)


def test_logs_follow_streams_until_the_container_exits(cluster: Cluster) -> None:
    name = cluster.name("follow")
    cluster.create_pod(name, "for i in 1 2 3; do echo tick $i; sleep 0.5; done")
    # No wait for Ready: the pod may finish first, and kubectl logs waits for it to start.
    assert cluster.ok("logs", "-f", name, timeout=60) == "tick 1\ntick 2\ntick 3\n"


def test_logs_previous_reads_the_crashed_run(cluster: Cluster) -> None:
    name = cluster.name("crash")
    cluster.create_pod(name, "echo crashing; exit 1", restart_policy="OnFailure")
    last_reason = "{.status.containerStatuses[0].lastState.terminated.reason}"
    wait_for(cluster, name, f"jsonpath={last_reason}=Error")
    assert cluster.ok("logs", name, "--previous") == "crashing\n"
    status = row(cluster, name)["STATUS"]
    assert status in ("CrashLoopBackOff", "Running", "Error")
    restarts = row(cluster, name)["RESTARTS"]
    assert re.fullmatch(r"\d+ \(\d+[smh]\d*[smh]? ago\)", restarts)
    cluster.ok("delete", "pod", name, "--grace-period=0", "--force")


def test_logs_previous_of_a_container_never_restarted_is_an_error(cluster: Cluster) -> None:
    name = cluster.name("once")
    cluster.create_pod(name, "echo once")
    wait_for(cluster, name, "jsonpath={.status.phase}=Succeeded")
    result = cluster.kubectl("logs", name, "--previous")
    assert result.returncode == 1
    assert f'previous terminated container "main" in pod "{name}" not found' in result.stderr


def test_exec_runs_beside_the_container_and_passes_its_exit_code(cluster: Cluster) -> None:
    name = cluster.name("exec")
    cluster.create_pod(name, "sleep 60")
    wait_for(cluster, name, "condition=Ready")
    assert cluster.ok("exec", name, "--", "echo", "hello") == "hello\n"
    failed = cluster.kubectl("exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (failed.returncode, failed.stdout) == (3, "out\n")
    assert failed.stderr.splitlines() == ["err", "command terminated with exit code 3"]
    piped = cluster.ok("exec", "-i", name, "--", "sh", "-c", "cat; echo end", input="a\nb\n")
    assert piped == "a\nb\nend\n"


def test_run_interactive_feeds_stdin_shows_output_and_removes_the_pod(cluster: Cluster) -> None:
    name = cluster.name("run-i")
    script = 'read line; echo "got $line"; exit 2'
    run = cluster.kubectl(
        "run", name, "-i", "--rm", "--restart=Never", "--image=busybox",
        "--command", "--", "sh", "-c", script, input="hello\n",
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stdout.splitlines() == ["got hello", f'pod "{name}" deleted']
    assert "couldn't attach" not in run.stderr
    assert "NotFound" in cluster.kubectl("get", "pod", name).stderr


def test_attach_shows_the_output_of_a_running_container_until_it_ends(cluster: Cluster) -> None:
    name = cluster.name("attached")
    cluster.create_pod(name, "echo one; sleep 1; echo two")
    wait_for(cluster, name, "condition=Ready")
    attached = cluster.kubectl("attach", name)
    assert (attached.returncode, attached.stdout) == (0, "one\ntwo\n")


def test_attach_to_a_completed_pod_is_refused(cluster: Cluster) -> None:
    name = cluster.name("done")
    cluster.create_pod(name, "true")
    wait_for(cluster, name, "jsonpath={.status.phase}=Succeeded")
    refused = cluster.kubectl("attach", name)
    assert refused.returncode == 1
    assert "cannot attach a container in a completed pod; current phase is Succeeded" in (
        refused.stderr
    )


def test_graceful_delete_sends_sigterm_and_shows_terminating(cluster: Cluster) -> None:
    name = cluster.name("term")
    script = "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    cluster.create_pod(name, script, grace=30)
    wait_for(cluster, name, "condition=Ready")
    follow = subprocess.Popen(
        cluster.argv("logs", "-f", name), stdout=subprocess.PIPE, text=True, env=cluster.env()
    )
    try:
        assert follow.stdout is not None and follow.stdout.readline() == "ready\n"
        deleted = cluster.kubectl("delete", "pod", name, timeout=60)
        out, _ = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert deleted.returncode == 0
    assert deleted.stdout.strip() == f'pod "{name}" deleted'
    assert out.splitlines()[-1] == "got TERM"  # the sandbox signals the whole process group
    assert cluster.kubectl("get", "pod", name).returncode == 1


def test_delete_without_wait_leaves_the_pod_terminating_until_sigkill(cluster: Cluster) -> None:
    name = cluster.name("stubborn")
    cluster.create_pod(name, "trap '' TERM; while true; do sleep 0.1; done", grace=2)
    wait_for(cluster, name, "condition=Ready")
    cluster.ok("delete", "pod", name, "--wait=false")
    assert row(cluster, name)["STATUS"] == "Terminating"
    wait_for(cluster, name, "delete", timeout="60s")
    assert cluster.kubectl("get", "pod", name).returncode == 1


def test_explain_reads_the_published_schema(cluster: Cluster) -> None:
    text = cluster.ok("explain", "pod.spec.restartPolicy")
    assert "KIND:       Pod" in text and "VERSION:    v1" in text
    assert "FIELD: restartPolicy <string>" in text
    assert "Restart policy for all containers within the pod." in text
    fields = cluster.ok("explain", "pod.spec.containers")
    assert "image\t<string>" in fields and "name\t<string> -required-" in fields


@pytest.mark.parametrize(
    ("field", "kind", "said"),
    [
        ("node.status.capacity", "Node", "Capacity represents the total resources of a node."),
        ("namespace.status.phase", "Namespace", "Phase is the current lifecycle phase"),
        ("service.spec.clusterIP", "Service", "clusterIP is the IP address of the service"),
    ],
)
def test_explain_knows_the_cluster_resources(
    cluster: Cluster, field: str, kind: str, said: str
) -> None:
    text = cluster.ok("explain", field)
    assert f"KIND:       {kind}" in text and said in text


def test_a_namespace_is_applied_labelled_and_annotated(cluster: Cluster) -> None:
    namespace = f"applied-{uuid.uuid4().hex[:6]}"
    manifest = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {"tier": "batch"}}}  # fmt: skip
    try:
        assert cluster.ok("apply", "-f", "-", input=yaml.safe_dump(manifest)).strip() == (
            f"namespace/{namespace} created"
        )
        manifest["metadata"]["labels"]["tier"] = "stream"
        assert cluster.ok("apply", "-f", "-", input=yaml.safe_dump(manifest)).strip() == (
            f"namespace/{namespace} configured"
        )
        cluster.ok("label", "namespace", namespace, "team=data")
        cluster.ok("annotate", "namespace", namespace, "note=kept")
        found = json.loads(cluster.ok("get", "namespace", namespace, "-o", "json"))
        labels = found["metadata"]["labels"]
        assert labels == {"tier": "stream", "team": "data",
                          "kubernetes.io/metadata.name": namespace}  # fmt: skip
        assert found["metadata"]["annotations"]["note"] == "kept"
        refused = cluster.kubectl("label", "namespace", namespace, "bad label=x")
        assert refused.returncode == 1 and f'The Namespace "{namespace}" is invalid' in (
            refused.stderr
        )
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def test_apply_validates_creates_and_configures(cluster: Cluster) -> None:
    name = cluster.name("applied")
    manifest = pod_yaml(name, "sleep 60", labels={"suite": "kubectl"})
    created = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    assert (created.returncode, created.stdout.strip()) == (0, f"pod/{name} created")
    manifest["metadata"]["labels"]["tier"] = "batch"
    manifest["metadata"]["annotations"] = {"note": "second"}
    configured = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    assert (configured.returncode, configured.stdout.strip()) == (0, f"pod/{name} configured")
    unchanged = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    assert unchanged.stdout.strip() == f"pod/{name} unchanged"
    pod = json.loads(cluster.ok("get", "pod", name, "-o", "json"))
    assert pod["metadata"]["labels"] == {"suite": "kubectl", "tier": "batch"}
    assert pod["metadata"]["annotations"]["note"] == "second"
    last = json.loads(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    )
    assert last["metadata"]["labels"]["tier"] == "batch"
    del manifest["metadata"]["labels"]["tier"]
    cluster.ok("apply", "-f", "-", input=yaml.safe_dump(manifest))
    labels = cluster.ok("get", "pod", name, "-o", "jsonpath={.metadata.labels}")
    assert json.loads(labels) == {"suite": "kubectl"}
    cluster.ok("delete", "pod", name, "--grace-period=0", "--force")


def test_server_side_apply_creates_then_updates(cluster: Cluster) -> None:
    name = cluster.name("ssa")
    manifest = pod_yaml(name, "sleep 60")
    dry = cluster.ok("apply", "--server-side", "--dry-run=server", "-f", "-",
                     input=yaml.safe_dump(manifest))  # fmt: skip
    assert dry.strip() == f"pod/{name} serverside-applied (server dry run)"
    assert "NotFound" in cluster.kubectl("get", "pod", name).stderr
    created = cluster.ok("apply", "--server-side", "-f", "-", input=yaml.safe_dump(manifest))
    assert created.strip() == f"pod/{name} serverside-applied"
    manifest["metadata"]["labels"]["tier"] = "batch"
    cluster.ok("apply", "--server-side", "-f", "-", input=yaml.safe_dump(manifest))
    labels = cluster.ok("get", "pod", name, "-o", "jsonpath={.metadata.labels.tier}")
    assert labels == "batch"
    cluster.ok("delete", "pod", name, "--grace-period=0", "--force")


def test_apply_rejects_an_unknown_field_and_warns_when_asked(cluster: Cluster) -> None:
    name = cluster.name("typo")
    manifest = pod_yaml(name, "sleep 1")
    manifest["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    rejected = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    assert rejected.returncode == 1
    assert 'strict decoding error: unknown field "spec.containers[0].imagePullPolcy"' in (
        rejected.stderr
    )
    warned = cluster.kubectl("apply", "--validate=warn", "-f", "-", input=yaml.safe_dump(manifest))
    assert warned.returncode == 0
    assert 'Warning: unknown field "spec.containers[0].imagePullPolcy"' in warned.stderr
    stored = json.loads(cluster.ok("get", "pod", name, "-o", "jsonpath={.spec.containers[0]}"))
    assert "imagePullPolcy" not in stored


def test_a_value_of_the_wrong_type_cannot_be_decoded(cluster: Cluster) -> None:
    """A string where a list of strings goes: refused as apiserver refuses it, never stored
    for the kubelet to trip over."""
    name = cluster.name("string-command")
    manifest = pod_yaml(name, "sleep 1")
    manifest["spec"]["containers"][0]["command"] = "echo hi"
    refused = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    assert refused.returncode == 1
    assert (
        'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal string into '
        "Go struct field Container.spec.containers.command of type []string"
    ) in refused.stderr
    assert "NotFound" in cluster.kubectl("get", "pod", name).stderr


def test_debug_says_ephemeral_containers_are_not_served(cluster: Cluster) -> None:
    name = cluster.name("debugged")
    cluster.create_pod(name, "sleep 60")
    debug = cluster.kubectl("debug", name, "--image=busybox", "--", "sh")
    assert debug.returncode == 1
    assert "ephemeral containers are disabled for this cluster" in debug.stderr
    cluster.ok("delete", "pod", name, "--grace-period=0", "--force")


def test_describe_shows_the_kubelet_events(cluster: Cluster) -> None:
    name = cluster.name("described")
    cluster.create_pod(name, "sleep 60")
    wait_for(cluster, name, "condition=Ready")
    described = cluster.ok("describe", "pod", name)
    events = described[described.index("Events:") :]
    for reason in ("Scheduled", "Pulled", "Created", "Started"):
        assert re.search(rf"Normal\s+{reason}\s", events), events
    assert f"Successfully assigned {cluster.namespace}/{name} to " in events
    assert "Started container main" in events
    cluster.ok("delete", "pod", name, "--grace-period=1")
    header, *rows = columns(
        cluster.ok("get", "events", f"--field-selector=involvedObject.name={name}")
    )
    assert header == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert ["Normal", "Killing", f"pod/{name}", "Stopping container main"] in [r[1:] for r in rows]


def test_a_crashing_container_records_backoff_warnings(cluster: Cluster) -> None:
    name = cluster.name("backoff")
    cluster.create_pod(name, "exit 1", restart_policy="Always")
    last_reason = "{.status.containerStatuses[0].lastState.terminated.reason}"
    wait_for(cluster, name, f"jsonpath={last_reason}=Error")
    selector = f"--field-selector=involvedObject.name={name},reason=BackOff"
    types = cluster.ok("get", "events", selector, "-o", "jsonpath={.items[*].type}")
    assert types.split() == ["Warning"]
    cluster.ok("delete", "pod", name, "--grace-period=0", "--force")


def test_label_annotate_and_select(cluster: Cluster) -> None:
    name, other = cluster.name("labelled"), cluster.name("other")
    cluster.create_pod(name, "sleep 60")
    cluster.create_pod(other, "sleep 60")
    assert cluster.ok("label", "pod", name, "tier=web").strip() == f"pod/{name} labeled"
    assert cluster.ok("annotate", "pod", name, "note=hi").strip() == f"pod/{name} annotated"
    selected = cluster.ok("get", "pods", "-l", "tier=web", "-o", "name").split()
    assert selected == [f"pod/{name}"]
    everywhere = columns(cluster.ok("get", "pods", "-A", "-l", "tier=web"))
    assert everywhere[0][:2] == ["NAMESPACE", "NAME"]
    assert [r[:2] for r in everywhere[1:]] == [[cluster.namespace, name]]
    wait_for(cluster, name, "condition=Ready")
    running = cluster.ok(
        "get", "pods", "--field-selector=status.phase=Running,metadata.name=" + name, "-o", "name"
    )
    assert running.split() == [f"pod/{name}"]
    pod = yaml.safe_load(cluster.ok("get", "pod", name, "-o", "yaml"))
    assert pod["metadata"]["labels"]["tier"] == "web"
    assert pod["metadata"]["annotations"]["note"] == "hi"
    assert cluster.ok("label", "pod", name, "tier-").strip() == f"pod/{name} unlabeled"
    assert (
        "tier" not in json.loads(cluster.ok("get", "pod", name, "-o", "json"))["metadata"]["labels"]
    )
    bad = cluster.kubectl("get", "pods", "--field-selector=spec.image=x")
    assert bad.returncode == 1 and 'field label not supported: "spec.image"' in bad.stderr
    cluster.ok("delete", "pod", name, other, "--grace-period=0", "--force")


def test_get_watch_prints_each_change_as_a_row(cluster: Cluster) -> None:
    name = cluster.name("watched")
    cluster.create_pod(name, "trap 'exit 0' TERM; while true; do sleep 0.1; done", grace=30)
    wait_for(cluster, name, "condition=Ready")
    watcher = subprocess.Popen(
        cluster.argv("get", "pod", name, "-w"), stdout=subprocess.PIPE, text=True, env=cluster.env()
    )
    try:
        assert watcher.stdout is not None
        lines = [watcher.stdout.readline(), watcher.stdout.readline()]
        cluster.ok("delete", "pod", name, "--wait=false")
        while "Completed" not in lines[-1]:
            line = watcher.stdout.readline()
            assert line, "kubectl get -w ended early"
            lines.append(line)
    finally:
        watcher.kill()
        watcher.wait()
    header, *rows = columns("".join(lines))
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    statuses = [r[2] for r in rows]
    assert statuses[0] == "Running" and "Terminating" in statuses and statuses[-1] == "Completed"
    assert all(r[0] == name for r in rows)


def test_server_dry_run_persists_nothing(cluster: Cluster) -> None:
    name = cluster.name("dry")
    manifest = yaml.safe_dump(pod_yaml(name, "sleep 60"))
    dry = cluster.ok("create", "--dry-run=server", "-f", "-", input=manifest)
    assert dry.strip() == f"pod/{name} created (server dry run)"
    assert cluster.kubectl("get", "pod", name).returncode == 1
    cluster.create_pod(name, "sleep 60")
    labelled = cluster.ok("label", "pod", name, "dry=run", "--dry-run=server")
    assert labelled.strip() == f"pod/{name} labeled (server dry run)"
    deleted = cluster.ok("delete", "pod", name, "--dry-run=server")
    assert deleted.strip() == f'pod "{name}" deleted (server dry run)'
    pod = json.loads(cluster.ok("get", "pod", name, "-o", "json"))
    assert "dry" not in pod["metadata"]["labels"]
    assert "deletionTimestamp" not in pod["metadata"]
    cluster.ok("delete", "pod", name, "--grace-period=0", "--force")
