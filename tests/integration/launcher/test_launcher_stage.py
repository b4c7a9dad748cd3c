"""The launcher stage on a real broker and the Kubernetes API emulator."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from kubernetes import client

from pipeline import messages, pods
from pipeline.messages import TaskKey
from pipeline.sandbox.kube import RUN_SECONDS, KubeEmulator
from tests.fixtures.kafka import read_all, read_records
from tests.fixtures.polling import eventually
from tests.integration.launcher.support import (
    ALLOWED,
    ClusterView,
    SetEnv,
    launcher_run,
    managed_pods,
    publish,
    publish_raw,
    read_events,
    request,
)

pytestmark = pytest.mark.integration


async def test_each_request_becomes_one_pod_with_its_spec(
    launcher_env: SetEnv, kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    s = launcher_env(creation_batch_size=3, max_concurrent_creates=8)
    keys = [TaskKey("spec", f"t{i}", "r1", i % 3 - 1, 1) for i in range(24)]
    override = {
        "metadata": {"labels": {"team": "data"}},
        "spec": {"containers": [{"name": "base", "resources": {"limits": {"memory": "64Mi"}}}]},
    }
    config = {"pod_override": override}
    await publish(
        s, [request(k, image="python:3.13", env={"N": k.task_id}, executor_config=config)
            for k in keys],
    )  # fmt: skip

    async with launcher_run(s):
        events = await read_events(s, len(keys))

    assert Counter(e["state"] for e in events) == {"launched": len(keys)}
    assert {TaskKey.from_wire(e["key"]) for e in events} == set(keys)
    assert all(e["pod_name"] == pods.pod_name(TaskKey.from_wire(e["key"])) for e in events)
    assert all(e["source"] == "launcher" and e["namespace"] == "default" for e in events)

    created = await asyncio.to_thread(managed_pods, core_v1)
    by_key = {pods.key_from_annotations(p["metadata"]["annotations"]): p for p in created}
    assert set(by_key) == set(keys) and len(created) == len(keys)
    for key, pod in by_key.items():
        assert key is not None
        assert pod["metadata"]["name"] == pods.pod_name(key)
        assert pod["metadata"]["labels"] == {
            "team": "data",
            **pods.pod_labels(key, s.runtime.instance or ""),
        }
        base = pod["spec"]["containers"][0]
        assert base["image"] == "python:3.13"
        assert base["command"] == [*ALLOWED, key.dag_id, key.task_id, key.run_id]
        assert base["env"] == [{"name": "N", "value": key.task_id}]
        assert base["resources"] == {"limits": {"memory": "64Mi"}}
        assert pod["spec"]["restartPolicy"] == "Never"
    # The cycle never started more creations than the batch allows.
    assert 1 <= kube_emulator.stats.max_creates_in_flight <= 3


async def test_parallelism_and_concurrency_are_never_exceeded(
    launcher_env: SetEnv, kube_emulator: KubeEmulator
) -> None:
    s = launcher_env(creation_batch_size=4, max_concurrent_creates=2, parallelism=5)
    keys = [TaskKey("limits", f"t{i}", "r1") for i in range(20)]
    view = ClusterView(kube_emulator)
    runs = {"metadata": {"annotations": {RUN_SECONDS: "0.4"}}}
    await publish(s, [request(k, executor_config={"pod_override": runs}) for k in keys])

    async with view.reporting(s), launcher_run(s):
        events = await read_events(s, len(keys) * 2)  # launched + the watcher's success

    launched = {TaskKey.from_wire(e["key"]) for e in events if e["state"] == "launched"}
    assert launched == set(keys)
    assert view.max_unfinished == 5  # full, and never more
    assert kube_emulator.stats.max_creates_in_flight <= 2
    view.close()


async def test_pods_alive_at_start_count_against_parallelism(
    launcher_env: SetEnv, kube_emulator: KubeEmulator
) -> None:
    """A restarted launcher adopts the unfinished pods of its predecessor before creating more."""
    s = launcher_env(parallelism=3)
    view = ClusterView(kube_emulator)
    slow = {"metadata": {"annotations": {RUN_SECONDS: "600"}}}
    first = [TaskKey("adopt", f"a{i}", "r") for i in range(2)]
    await publish(s, [request(k, executor_config={"pod_override": slow}) for k in first])
    async with launcher_run(s):
        await read_events(s, 2)

    later = [TaskKey("adopt", f"b{i}", "r") for i in range(3)]
    await publish(s, [request(k) for k in later])
    async with view.reporting(s), launcher_run(s):
        events = await read_events(s, 2 + 2 * len(later))
    assert {TaskKey.from_wire(e["key"]) for e in events if e["state"] == "launched"} == {
        *first,
        *later,
    }
    assert view.max_unfinished == 3
    view.close()


async def test_rejected_requests_fail_alone_and_bad_bytes_go_to_the_dlq(
    launcher_env: SetEnv, core_v1: client.CoreV1Api
) -> None:
    s = launcher_env(pod_mutation_hook="tests.integration.launcher.hooks:refuse_forbidden")
    good = [TaskKey("hooked", f"ok{i}", "r") for i in range(3)]
    forbidden = TaskKey("forbidden", "t", "r")
    shell = TaskKey("hooked", "shell", "r")
    privileged = TaskKey("hooked", "privileged", "r")
    escalate = {"spec": {"containers": [{"name": "base",
                                         "securityContext": {"privileged": True}}]}}  # fmt: skip
    requests = [
        *(request(k) for k in good),
        request(forbidden),
        messages.make_request(shell, ["bash", "-c", "id"], "kubernetes"),
        request(privileged, executor_config={"pod_override": escalate}),
    ]
    await publish(s, requests)
    await publish_raw(s, s.topic.kubernetes, [(b"raw", b"{not json")])

    async with launcher_run(s):
        events = await read_events(s, len(requests))
        letters = await read_records(s, s.topic.dlq, 1)

    by_key = {TaskKey.from_wire(e["key"]): e for e in events}
    assert {k for k, e in by_key.items() if e["state"] == "launched"} == set(good)
    assert by_key[forbidden]["state"] == "failed"
    assert by_key[forbidden]["reason"] == (
        "pod mutation hook failed: PermissionError: dag forbidden may not run here"
    )
    assert "command not allowed" in (by_key[shell]["reason"] or "")
    assert "privileged containers are not allowed" in (by_key[privileged]["reason"] or "")
    names = {p["metadata"]["name"] for p in await asyncio.to_thread(managed_pods, core_v1)}
    assert names == {pods.pod_name(k) for k in good}
    letter = messages.decode(messages.Kind.DEAD_LETTER, letters[0].value)
    assert messages.dead_letter_original(letter) == (b"raw", b"{not json")
    assert letter["stage"] == "launcher" and letter["error"]["code"] == "not_json"


async def test_api_errors_are_handled_as_airflow_does(
    launcher_env: SetEnv, kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    s = launcher_env(max_retries=2)
    existing, bad_request, invalid = (TaskKey("api", n, "r") for n in ("exists", "400", "422"))
    pre = request(existing)
    await asyncio.to_thread(
        core_v1.create_namespaced_pod, "default",
        {"metadata": {"name": pods.pod_name(existing)},
         "spec": {"containers": [{"name": "base", "image": "x"}]}},
    )  # fmt: skip
    await publish(s, [
        pre,
        request(bad_request, executor_config={"pod_override": {"kind": "Deployment"}}),
        request(invalid, executor_config={"pod_override": {
            "metadata": {"annotations": {"not/a/valid key": "x"}}}}),
    ])  # fmt: skip
    async with launcher_run(s):
        events = {TaskKey.from_wire(e["key"]): e for e in await read_events(s, 3)}
        assert events[existing]["state"] == "launched"  # 409: created before, counts as done
        assert events[bad_request]["state"] == "failed"
        assert (events[bad_request]["reason"] or "").startswith("400 Bad Request: ")
        assert events[invalid]["state"] == "failed"
        assert (events[invalid]["reason"] or "").startswith("422 Unprocessable Entity: ")
        assert "metadata.annotations" in (events[invalid]["reason"] or "")

        # 5xx until retries run out: failed, with the last error.
        kube_emulator.faults.fail("create", code=503)
        gave_up = TaskKey("api", "503", "r")
        await publish(s, [request(gave_up)])
        event = {TaskKey.from_wire(e["key"]): e for e in await read_events(s, 4)}[gave_up]
        assert event["state"] == "failed"
        assert (event["reason"] or "").startswith("gave up after 2 retries: 503")

        # 429 and 500 that pass: retried (429 after its Retry-After) and launched.
        for seen, code in enumerate((429, 500), start=5):
            kube_emulator.faults.fail("create", code=code, count=2)
            before = kube_emulator.stats.requests.get("create", 0)
            key = TaskKey("api", str(code), "r")
            await publish(s, [request(key)])
            event = {TaskKey.from_wire(e["key"]): e for e in await read_events(s, seen)}[key]
            assert event["state"] == "launched"
            assert kube_emulator.stats.requests.get("create", 0) - before == 3


async def test_a_retrying_create_does_not_hold_up_others(
    launcher_env: SetEnv, kube_emulator: KubeEmulator
) -> None:
    s = launcher_env(retry_base_s=3)
    slow, quick = TaskKey("hold", "slow", "r"), TaskKey("hold", "quick", "r")
    kube_emulator.faults.fail("create", code=503, count=1)
    async with launcher_run(s):
        await publish(s, [request(slow)])

        async def slow_was_refused() -> bool:
            return kube_emulator.faults.config.errors["create"].count == 0

        await eventually(slow_was_refused, timeout_s=10, interval_s=0.01)
        await publish(s, [request(quick)])
        events = await read_events(s, 2)
    in_order = sorted(events, key=lambda e: e["observed_at"])
    assert [TaskKey.from_wire(e["key"]) for e in in_order] == [quick, slow]
    assert all(e["state"] == "launched" for e in events)


async def test_redelivered_requests_keep_one_pod_and_one_event_id(
    launcher_env: SetEnv, core_v1: client.CoreV1Api
) -> None:
    s = launcher_env()
    keys = [TaskKey("again", f"t{i}", "r") for i in range(5)]
    await publish(s, [request(k) for k in keys])
    async with launcher_run(s):
        first = await read_events(s, 5)
    await publish(s, [request(k) for k in keys])  # the same requests once more
    async with launcher_run(s):
        both = await read_events(s, 10)
    assert len(await read_all(s, s.topic.events)) == 10
    assert Counter(e["event_id"] for e in both) == {e["event_id"]: 2 for e in first}
    assert len(await asyncio.to_thread(managed_pods, core_v1)) == 5
