"""The node and the namespaces through the official client: what `kubectl get nodes/ns` reads."""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from pipeline.sandbox.kube import RUN_SECONDS, KubeEmulator
from tests.fixtures.kube import (
    client_configuration,
    core_v1_for,
    phase_reached,
    pod_manifest,
    watch_until,
)

pytestmark = pytest.mark.integration


async def test_the_node_is_ready_with_this_machines_capacity(core_v1: client.CoreV1Api) -> None:
    nodes = await asyncio.to_thread(core_v1.list_node)
    [node] = nodes.items
    assert node.metadata.name == "sandbox-node"
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready == {
        "Ready": "True",
        "MemoryPressure": "False",
        "DiskPressure": "False",
        "PIDPressure": "False",
    }
    assert int(node.status.capacity["cpu"]) >= 1
    assert node.status.capacity["memory"].endswith("Ki")
    assert node.status.node_info.kubelet_version.startswith("v1.")
    read = await asyncio.to_thread(core_v1.read_node, "sandbox-node")
    assert read.metadata.uid == node.metadata.uid


async def test_pods_run_on_the_node_the_api_lists(core_v1: client.CoreV1Api) -> None:
    body = pod_manifest("on-node", command=["sleep", "5"])
    created = await asyncio.to_thread(core_v1.create_namespaced_pod, "default", body)
    rv = created.metadata.resource_version
    events = await watch_until(core_v1, phase_reached("on-node", "Running"), resource_version=rv)
    pod = events[-1]["object"]
    node = await asyncio.to_thread(core_v1.read_node, pod["spec"]["nodeName"])
    assert node.status.addresses[0].address == pod["status"]["hostIP"]


async def test_a_node_of_an_off_kubelet_is_not_ready() -> None:
    async with KubeEmulator(port=0, mode="off") as emulator:
        api_client = client.ApiClient(client_configuration(emulator))
        try:
            node = await asyncio.to_thread(client.CoreV1Api(api_client).read_node, "sandbox-node")
        finally:
            api_client.close()
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "KubeletNotReady")


async def test_a_missing_node_is_not_found(core_v1: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        await asyncio.to_thread(core_v1.read_node, "no-such-node")
    assert raised.value.status == 404


async def test_namespaces_start_with_the_four_of_every_cluster(core_v1: client.CoreV1Api) -> None:
    found = await asyncio.to_thread(core_v1.list_namespace)
    names = [n.metadata.name for n in found.items]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
    assert {n.status.phase for n in found.items} == {"Active"}


async def test_a_pod_in_a_namespace_nobody_created_is_refused(core_v1: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as refused:
        await asyncio.to_thread(core_v1.create_namespaced_pod, "team-b", pod_manifest("first"))
    assert refused.value.status == 404
    assert json.loads(refused.value.body)["message"] == 'namespaces "team-b" not found'
    with pytest.raises(ApiException) as absent:
        await asyncio.to_thread(core_v1.read_namespace, "team-b")
    assert absent.value.status == 404


async def test_the_served_namespace_exists_from_the_start() -> None:
    async with KubeEmulator(port=0, namespace="airflow") as emulator:
        namespace = await asyncio.to_thread(core_v1_for(emulator).read_namespace, "airflow")
    assert namespace.metadata.labels == {"kubernetes.io/metadata.name": "airflow"}
    assert namespace.status.phase == "Active"


async def test_create_namespace_keeps_its_labels_and_refuses_twice(
    core_v1: client.CoreV1Api,
) -> None:
    body = {"metadata": {"name": "team-a", "labels": {"owner": "data"}}}
    created = await asyncio.to_thread(core_v1.create_namespace, body)
    assert created.metadata.labels == {"owner": "data", "kubernetes.io/metadata.name": "team-a"}
    with pytest.raises(ApiException) as raised:
        await asyncio.to_thread(core_v1.create_namespace, body)
    assert raised.value.status == 409


@pytest.mark.parametrize(
    ("metadata", "status"),
    [({"name": "Not_A_Label"}, 422), ({}, 400), ({"labels": {}}, 400), ({"name": 7}, 400)],
)
async def test_create_namespace_refuses_a_bad_name(
    core_v1: client.CoreV1Api, metadata: dict[str, object], status: int
) -> None:
    with pytest.raises(ApiException) as raised:
        await asyncio.to_thread(core_v1.create_namespace, {"metadata": metadata})
    assert raised.value.status == status


async def test_generate_name_makes_a_namespace(core_v1: client.CoreV1Api) -> None:
    body = {"metadata": {"generateName": "t-"}}
    created = await asyncio.to_thread(core_v1.create_namespace, body)
    assert created.metadata.name.startswith("t-") and len(created.metadata.name) == 7


@pytest.mark.parametrize(
    "path",
    [
        "api/v1/namespaces",
        "api/v1/namespaces/default/events",
        "apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    ],
)
async def test_a_body_that_is_not_json_is_a_bad_request(
    kube_emulator: KubeEmulator, path: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{kube_emulator.url}/{path}", data=b"{not json") as response,
    ):
        status = await response.json()
    assert (response.status, status["reason"]) == (400, "BadRequest")


async def test_the_api_server_is_the_kubernetes_service(
    kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    found = await asyncio.to_thread(core_v1.list_service_for_all_namespaces)
    [service] = found.items
    assert (service.metadata.namespace, service.metadata.name) == ("default", "kubernetes")
    [port] = service.spec.ports
    assert (port.port, port.target_port) == (443, kube_emulator.port)
    read = await asyncio.to_thread(core_v1.read_namespaced_service, "kubernetes", "default")
    assert read.spec.cluster_ip == service.spec.cluster_ip
    with pytest.raises(ApiException) as raised:
        await asyncio.to_thread(core_v1.read_namespaced_service, "kubernetes", "kube-system")
    assert raised.value.status == 404


def namespace_deleted(core_v1: client.CoreV1Api, name: str, resource_version: str) -> bool:
    """Watch one namespace (blocking: run it in a thread) until it is deleted or 10 s pass."""
    stream = watch.Watch()
    for event in stream.stream(
        core_v1.list_namespace,
        field_selector=f"metadata.name={name}",
        resource_version=resource_version,
        timeout_seconds=10,
    ):
        if event["type"] == "DELETED":
            stream.stop()
            return True
    return False


STUBBORN = [  # a container that outlives SIGTERM: its pod terminates for its grace period
    sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ready', flush=True); time.sleep(60)",
]  # fmt: skip


def first_line(core_v1: client.CoreV1Api, name: str, namespace: str) -> bytes:
    """The first line a pod logs, read by following its log (blocking: run it in a thread)."""
    response = core_v1.read_namespaced_pod_log(
        name, namespace, follow=True, _preload_content=False, _request_timeout=10
    )
    try:
        return bytes(response.readline())
    finally:
        response.release_conn()


async def test_delete_namespace_stops_its_pods_then_goes_with_them() -> None:
    async with KubeEmulator(port=0, mode="process") as emulator:
        core_v1 = core_v1_for(emulator)
        await asyncio.to_thread(core_v1.create_namespace, {"metadata": {"name": "leaving"}})
        body = pod_manifest("stubborn", command=STUBBORN)
        body["spec"]["terminationGracePeriodSeconds"] = 2
        await asyncio.to_thread(core_v1.create_namespaced_pod, "leaving", body)
        await asyncio.to_thread(core_v1.create_namespaced_pod, "default", pod_manifest("stays"))
        await watch_until(core_v1, phase_reached("stubborn", "Running"), namespace="leaving")
        assert await asyncio.to_thread(first_line, core_v1, "stubborn", "leaving") == b"ready\n"

        answer = await asyncio.to_thread(
            core_v1.delete_namespace, "leaving", _preload_content=False
        )
        deleted = json.loads(answer.data)  # the namespace (the client would read a Status)
        assert deleted["status"]["phase"] == "Terminating"
        with pytest.raises(ApiException) as refused:  # no new pods while it terminates
            await asyncio.to_thread(core_v1.create_namespaced_pod, "leaving", pod_manifest("late"))
        assert refused.value.status == 403
        assert "because it is being terminated" in refused.value.body

        rv = deleted["metadata"]["resourceVersion"]
        assert await asyncio.to_thread(namespace_deleted, core_v1, "leaving", rv)
        left = await asyncio.to_thread(core_v1.list_pod_for_all_namespaces)
        names = [(p.metadata.namespace, p.metadata.name) for p in left.items]
        assert names == [("default", "stays")]
        events = await asyncio.to_thread(core_v1.list_namespaced_event, "leaving")
        assert events.items == []
        core_v1.api_client.close()


@pytest.mark.parametrize(("name", "status"), [("default", 403), ("kube-system", 403), ("x", 404)])
async def test_delete_namespace_refuses_the_immortal_and_the_missing(
    core_v1: client.CoreV1Api, name: str, status: int
) -> None:
    with pytest.raises(ApiException) as raised:
        await asyncio.to_thread(core_v1.delete_namespace, name)
    assert raised.value.status == status


async def test_access_reviews_allow_and_whoami_names_the_sandbox_user(
    kube_emulator: KubeEmulator,
) -> None:
    api_client = client.ApiClient(client_configuration(kube_emulator))
    attributes = {"namespace": "default", "verb": "create", "resource": "pods"}
    review = {"spec": {"resourceAttributes": attributes}}
    answer = await asyncio.to_thread(
        client.AuthorizationV1Api(api_client).create_self_subject_access_review, review
    )
    assert answer.status.allowed and answer.spec.resource_attributes.verb == "create"
    me = await asyncio.to_thread(
        client.AuthenticationV1Api(api_client).create_self_subject_review, {}
    )
    assert me.status.user_info.username == "sandbox-admin"
    api_client.close()


async def test_a_namespace_is_patched_and_replaced_as_apiserver_would(
    core_v1: client.CoreV1Api,
) -> None:
    await asyncio.to_thread(core_v1.create_namespace, {"metadata": {"name": "changing"}})
    patch = {"metadata": {"labels": {"team": "data"}, "annotations": {"note": "kept"}}}
    patched = await asyncio.to_thread(core_v1.patch_namespace, "changing", patch)
    assert patched.metadata.labels == {"team": "data", "kubernetes.io/metadata.name": "changing"}
    assert patched.metadata.annotations == {"note": "kept"}
    stale = {"metadata": {"name": "changing", "resourceVersion": "1"}}
    with pytest.raises(ApiException) as conflicted:
        await asyncio.to_thread(core_v1.replace_namespace, "changing", stale)
    assert conflicted.value.status == 409
    bad = {"metadata": {"labels": {"bad key": "x"}}}
    with pytest.raises(ApiException) as refused:
        await asyncio.to_thread(core_v1.patch_namespace, "changing", bad)
    assert refused.value.status == 422
    current = {"metadata": {"name": "changing"}}  # no labels: only the name label stays
    replaced = await asyncio.to_thread(core_v1.replace_namespace, "changing", current)
    assert replaced.metadata.labels == {"kubernetes.io/metadata.name": "changing"}
    assert replaced.metadata.uid == patched.metadata.uid and replaced.status.phase == "Active"


async def test_a_namespace_of_finished_pods_goes_at_once_with_their_events(
    core_v1: client.CoreV1Api,
) -> None:
    await asyncio.to_thread(core_v1.create_namespace, {"metadata": {"name": "done"}})
    await asyncio.to_thread(core_v1.create_namespaced_pod, "done", pod_manifest("finished"))
    await watch_until(core_v1, phase_reached("finished", "Succeeded"), namespace="done")
    assert (await asyncio.to_thread(core_v1.list_namespaced_event, "done")).items

    await asyncio.to_thread(core_v1.delete_namespace, "done", _preload_content=False)
    with pytest.raises(ApiException) as gone:
        await asyncio.to_thread(core_v1.read_namespace, "done")
    assert gone.value.status == 404
    assert (await asyncio.to_thread(core_v1.list_namespaced_event, "done")).items == []
    assert (await asyncio.to_thread(core_v1.list_namespaced_pod, "done")).items == []


BURNER = [  # some CPU, then a line to say so, then idle
    sys.executable, "-c",
    "sum(range(3_000_000)); print('ready', flush=True); import time; time.sleep(60)",
]  # fmt: skip


async def test_metrics_report_a_process_containers_cpu_and_memory() -> None:
    async with KubeEmulator(port=0, mode="process") as emulator:
        core_v1 = core_v1_for(emulator)
        metrics = client.CustomObjectsApi(core_v1.api_client)
        await asyncio.to_thread(
            core_v1.create_namespaced_pod, "default", pod_manifest("burner", command=BURNER)
        )
        assert await asyncio.to_thread(first_line, core_v1, "burner", "default") == b"ready\n"
        found = await asyncio.to_thread(
            metrics.get_namespaced_custom_object,
            "metrics.k8s.io", "v1beta1", "default", "pods", "burner",
        )  # fmt: skip
        [container] = found["containers"]
        assert container["name"] == "base"
        assert int(container["usage"]["cpu"].removesuffix("n")) > 0  # over its life: the burn
        assert int(container["usage"]["memory"].removesuffix("Ki")) > 1024  # a Python: MiBs
        await asyncio.sleep(1.1)  # a window with nothing but the sleep in it
        again = await asyncio.to_thread(
            metrics.get_namespaced_custom_object,
            "metrics.k8s.io", "v1beta1", "default", "pods", "burner",
        )  # fmt: skip
        [idle] = again["containers"]
        assert float(again["window"].removesuffix("s")) >= 1.0
        assert int(idle["usage"]["cpu"].removesuffix("n")) < 50_000_000  # under 50m: asleep
        nodes = await asyncio.to_thread(
            metrics.list_cluster_custom_object, "metrics.k8s.io", "v1beta1", "nodes"
        )
        [node] = nodes["items"]
        assert node["metadata"]["name"] == "sandbox-node"
        assert int(node["usage"]["memory"].removesuffix("Ki")) > 0

        done = pod_manifest("done", command=["true"])
        created = await asyncio.to_thread(core_v1.create_namespaced_pod, "default", done)
        rv = created.metadata.resource_version
        await watch_until(core_v1, phase_reached("done", "Succeeded"), resource_version=rv)
        with pytest.raises(ApiException) as gone:  # nothing running, no metrics
            await asyncio.to_thread(
                metrics.get_namespaced_custom_object,
                "metrics.k8s.io", "v1beta1", "default", "pods", "done",
            )  # fmt: skip
        assert gone.value.status == 404
        core_v1.api_client.close()


async def test_a_simulated_container_uses_nothing(core_v1: client.CoreV1Api) -> None:
    body = pod_manifest("idle", annotations={RUN_SECONDS: "60"})  # running for the test
    created = await asyncio.to_thread(core_v1.create_namespaced_pod, "default", body)
    rv = created.metadata.resource_version
    await watch_until(core_v1, phase_reached("idle", "Running"), resource_version=rv)
    metrics = client.CustomObjectsApi(core_v1.api_client)
    found = await asyncio.to_thread(
        metrics.list_namespaced_custom_object, "metrics.k8s.io", "v1beta1", "default", "pods"
    )
    [pod] = found["items"]
    assert pod["containers"] == [{"name": "base", "usage": {"cpu": "0n", "memory": "0Ki"}}]
