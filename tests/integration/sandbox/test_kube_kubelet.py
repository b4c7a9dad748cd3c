"""The simulated kubelet seen through the client: phases, statuses, processes, logs, capacity."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from pipeline.sandbox.kube import (
    EXIT_CODE,
    LOGS,
    PENDING_SECONDS,
    RUN_SECONDS,
    KubeEmulator,
    Timings,
)
from tests.fixtures.kube import (
    FAST,
    core_v1_for,
    phase_reached,
    pod_log,
    pod_manifest,
    watch_until,
)

pytestmark = pytest.mark.integration
NS = "default"


async def run_to_end(api: client.CoreV1Api, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Create a pod and return its watch events up to a terminal phase."""
    created = await asyncio.to_thread(api.create_namespaced_pod, NS, body)
    name = created.metadata.name
    return await watch_until(
        api,
        phase_reached(name, "Succeeded", "Failed"),
        resource_version=created.metadata.resource_version,
    )


def container_state(event: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = event["object"]["status"]["containerStatuses"][0]["state"]
    return state


def conditions(event: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in event["object"]["status"]["conditions"]}


async def test_simulated_pod_moves_through_realistic_statuses(core_v1: client.CoreV1Api) -> None:
    events = await run_to_end(core_v1, pod_manifest("sim"))
    phases = [e["object"]["status"]["phase"] for e in events]
    assert phases[-1] == "Succeeded"
    assert phases.index("Running") > phases.index("Pending")
    creating = next(e for e in events if "containerStatuses" in e["object"]["status"])
    assert container_state(creating)["waiting"]["reason"] == "ContainerCreating"
    assert creating["object"]["spec"]["nodeName"] and creating["object"]["status"]["startTime"]
    running = next(e for e in events if e["object"]["status"]["phase"] == "Running")
    assert "startedAt" in container_state(running)["running"]
    assert conditions(running)["Ready"] == "True"
    terminated = container_state(events[-1])["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert terminated["startedAt"] and terminated["finishedAt"]
    assert conditions(events[-1])["Ready"] == "False"


async def test_exit_code_annotation_fails_the_pod(core_v1: client.CoreV1Api) -> None:
    events = await run_to_end(core_v1, pod_manifest("fails", annotations={EXIT_CODE: "2"}))
    terminated = container_state(events[-1])["terminated"]
    assert events[-1]["object"]["status"]["phase"] == "Failed"
    assert (terminated["exitCode"], terminated["reason"]) == (2, "Error")


async def test_simulated_logs_come_from_the_annotation(core_v1: client.CoreV1Api) -> None:
    await run_to_end(core_v1, pod_manifest("talks", annotations={LOGS: "line one\nline two"}))
    text = await pod_log(core_v1, "talks", tail_lines=1)
    assert text == "line two\n"


async def test_logs_of_a_container_not_started_are_400() -> None:
    async with KubeEmulator(mode="off") as emulator:
        api = core_v1_for(emulator)
        await asyncio.to_thread(api.create_namespaced_pod, NS, pod_manifest("waiting"))
        with pytest.raises(client.ApiException) as raised:
            await asyncio.to_thread(api.read_namespaced_pod_log, "waiting", NS)
    assert raised.value.status == 400
    assert "is waiting to start" in raised.value.body


async def test_process_mode_exit_3_fails_with_exit_code_3_and_serves_output() -> None:
    script = "import os; print('hello from', os.environ['WHO']); raise SystemExit(3)"
    body = pod_manifest("proc", command=[sys.executable, "-c", script])
    body["spec"]["containers"][0]["env"] = [{"name": "WHO", "value": "the sandbox"}]
    async with KubeEmulator(mode="process") as emulator:
        api = core_v1_for(emulator)
        events = await run_to_end(api, body)
        log = await pod_log(api, "proc")
    terminated = container_state(events[-1])["terminated"]
    assert events[-1]["object"]["status"]["phase"] == "Failed"
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert log == "hello from the sandbox\n"


async def test_process_mode_env_takes_the_pods_own_fields_by_the_downward_api() -> None:
    script = "import os; print(*(os.environ[n] for n in ('POD', 'NS', 'IP', 'APP', 'NODE')))"
    body = pod_manifest("downward", command=[sys.executable, "-c", script])
    body["metadata"]["labels"] = {"app": "etl"}
    fields = {
        "POD": "metadata.name", "NS": "metadata.namespace", "IP": "status.podIP",
        "APP": "metadata.labels['app']", "NODE": "spec.nodeName",
    }  # fmt: skip
    body["spec"]["containers"][0]["env"] = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for name, path in fields.items()
    ]
    async with KubeEmulator(mode="process") as emulator:
        api = core_v1_for(emulator)
        events = await run_to_end(api, body)
        log = await pod_log(api, "downward")
    pod = events[-1]["object"]
    assert log.split() == ["downward", NS, pod["status"]["podIP"], "etl", "sandbox-node"]
    env = pod["spec"]["containers"][0]["env"]
    assert {var["valueFrom"]["fieldRef"]["apiVersion"] for var in env} == {"v1"}


async def test_a_downward_api_field_the_kubelet_does_not_expose_is_invalid(
    core_v1: client.CoreV1Api,
) -> None:
    body = pod_manifest("no-such-field")
    body["spec"]["containers"][0]["env"] = [
        {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}
    ]
    with pytest.raises(client.ApiException) as raised:
        await asyncio.to_thread(core_v1.create_namespaced_pod, NS, body)
    assert raised.value.status == 422
    message = json.loads(raised.value.body)["message"]
    assert 'env[0].valueFrom.fieldRef.fieldPath: Unsupported value: "spec.hostname"' in message


def with_init_containers(name: str, main: str, *inits: str) -> dict[str, Any]:
    """A process-mode pod whose init containers and app container run these shell scripts."""
    body = pod_manifest(name, command=["sh", "-c", main])
    body["spec"]["initContainers"] = [
        {"name": f"init-{i}", "image": "busybox:1.36", "command": ["sh", "-c", script]}
        for i, script in enumerate(inits)
    ]
    return body


def init_states(event: dict[str, Any]) -> list[dict[str, Any]]:
    return [c["state"] for c in event["object"]["status"]["initContainerStatuses"]]


async def test_init_containers_run_one_after_another_before_the_app(tmp_path: Path) -> None:
    trail = tmp_path / "trail"
    body = with_init_containers(
        "initialized", f"cat {trail}", f"echo first >> {trail}", f"echo second >> {trail}"
    )
    async with KubeEmulator(mode="process") as emulator:
        api = core_v1_for(emulator)
        events = await run_to_end(api, body)
        log = await pod_log(api, "initialized")
        first_log = await pod_log(api, "initialized", container="init-0")
    assert log == "first\nsecond\n"
    assert first_log == ""
    pending = [e for e in events if e["object"]["status"].get("phase") == "Pending"]
    assert any(conditions(e).get("Initialized") == "False" for e in pending)
    last = events[-1]
    assert last["object"]["status"]["phase"] == "Succeeded"
    assert conditions(last)["Initialized"] == "True"
    assert [s["terminated"]["reason"] for s in init_states(last)] == ["Completed", "Completed"]


async def test_a_failed_init_container_fails_the_pod_before_the_app_runs(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    body = with_init_containers("init-fails", f"touch {ran}", "echo no repo; exit 2")
    async with KubeEmulator(mode="process") as emulator:
        api = core_v1_for(emulator)
        events = await run_to_end(api, body)
        init_log = await pod_log(api, "init-fails", container="init-0")
    last = events[-1]["object"]["status"]
    assert last["phase"] == "Failed"
    assert init_states(events[-1])[0]["terminated"]["exitCode"] == 2
    assert last["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert init_log == "no repo\n"
    assert not ran.exists()


async def test_a_failed_init_container_is_restarted_under_on_failure(tmp_path: Path) -> None:
    tried = tmp_path / "tried"
    flaky = f"if [ -e {tried} ]; then exit 0; fi; touch {tried}; exit 1"
    body = with_init_containers("init-retried", "true", flaky)
    body["spec"]["restartPolicy"] = "OnFailure"
    async with KubeEmulator(mode="process", timings=Timings(restart_backoff_seconds=0.05)) as emu:
        events = await run_to_end(core_v1_for(emu), body)
    last = events[-1]["object"]["status"]
    assert last["phase"] == "Succeeded"
    assert last["initContainerStatuses"][0]["restartCount"] == 1
    assert any(
        s.get("waiting", {}).get("reason") == "CrashLoopBackOff"
        for e in events
        if e["object"]["status"].get("initContainerStatuses")
        for s in init_states(e)
    )


@pytest.mark.parametrize("stage", [PENDING_SECONDS, RUN_SECONDS])
async def test_a_pod_past_its_active_deadline_fails_with_deadline_exceeded(
    core_v1: client.CoreV1Api, stage: str
) -> None:
    """Counted from the pod's start, whether it is still pending or running by then."""
    body = pod_manifest(f"deadline-{stage.rsplit('/', 1)[-1]}", annotations={stage: "60"})
    body["spec"].update(activeDeadlineSeconds=1, terminationGracePeriodSeconds=0)
    events = await run_to_end(core_v1, body)
    status = events[-1]["object"]["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")
    assert status["message"] == "Pod was active on the node longer than the specified deadline"


async def test_process_mode_runs_args_without_a_shell() -> None:
    body = pod_manifest("argv", command=[sys.executable, "-c"])
    body["spec"]["containers"][0]["args"] = ["import sys; print(sys.argv[1:])", "$HOME", "a;b"]
    async with KubeEmulator(mode="process") as emulator:
        api = core_v1_for(emulator)
        events = await run_to_end(api, body)
        log = await pod_log(api, "argv")
    assert events[-1]["object"]["status"]["phase"] == "Succeeded"
    assert log == "['$HOME', 'a;b']\n"


async def test_process_mode_missing_executable_is_a_start_error() -> None:
    async with KubeEmulator(mode="process") as emulator:
        api = core_v1_for(emulator)
        events = await run_to_end(api, pod_manifest("nope", command=["/no/such/binary"]))
    terminated = container_state(events[-1])["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")


async def test_capacity_keeps_extra_pods_pending_unschedulable() -> None:
    async with KubeEmulator(capacity=1, timings=FAST) as emulator:
        api = core_v1_for(emulator)
        start = await asyncio.to_thread(api.list_namespaced_pod, NS)
        for i in range(3):
            await asyncio.to_thread(api.create_namespaced_pod, NS, pod_manifest(f"c{i}"))
        events = await watch_until(
            api, phase_reached("c2", "Succeeded"), resource_version=start.metadata.resource_version
        )
        max_running = emulator.kubelet.stats.max_running
    unschedulable = [
        e["object"]["metadata"]["name"]
        for e in events
        if any(
            c.get("reason") == "Unschedulable" for c in e["object"]["status"].get("conditions", [])
        )
    ]
    assert max_running == 1
    assert {"c1", "c2"} <= set(unschedulable)


async def test_process_mode_graceful_delete_sends_sigterm() -> None:
    body = pod_manifest("sleeper", command=[sys.executable, "-c", "import time; time.sleep(60)"])
    body["spec"]["terminationGracePeriodSeconds"] = 5
    async with KubeEmulator(mode="process") as emulator:
        api = core_v1_for(emulator)
        created = await asyncio.to_thread(api.create_namespaced_pod, NS, body)
        rv = created.metadata.resource_version
        await watch_until(api, phase_reached("sleeper", "Running"), resource_version=rv)
        deleted = await asyncio.to_thread(api.delete_namespaced_pod, "sleeper", NS)
        events = await watch_until(
            api,
            lambda e: e[-1]["type"] == "DELETED",
            resource_version=deleted.metadata.resource_version,
        )
    assert deleted.metadata.deletion_grace_period_seconds == 5
    assert container_state(events[-1])["terminated"]["exitCode"] == 143


async def test_followed_log_streams_until_the_container_ends() -> None:
    script = "import sys, time\nfor word in ('one', 'two'):\n    print(word, flush=True)\n"
    script += "    time.sleep(0.2)"
    async with KubeEmulator(mode="process") as emulator:
        api = core_v1_for(emulator)
        created = await asyncio.to_thread(
            api.create_namespaced_pod,
            NS,
            pod_manifest("follow", command=[sys.executable, "-c", script]),
        )
        rv = created.metadata.resource_version
        await watch_until(api, phase_reached("follow", "Running"), resource_version=rv)
        text = await pod_log(api, "follow", follow=True)
    assert text == "one\ntwo\n"
