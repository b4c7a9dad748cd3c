"""Once per try: the launch ledger outlives the pod, so a re-delivered or re-published request
whose pod is gone is a duplicate, a cancelled try is never launched, and an adopted pod whose
try already ended holds no parallelism slot."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client

from pipeline import launches, messages, pods
from pipeline.config import Settings
from pipeline.kafka import make_producer, started
from pipeline.launcher import metrics
from pipeline.launches import LaunchStatus
from pipeline.messages import TaskKey
from pipeline.sandbox.kube import RUN_SECONDS, KubeEmulator
from tests.fixtures.kafka import read_all, read_records
from tests.fixtures.polling import eventually
from tests.integration.launcher.support import (
    SetEnv,
    launcher_run,
    managed_pods,
    publish,
    publish_raw,
    read_events,
    request,
)

pytestmark = pytest.mark.integration


async def write_records(settings: Settings, records: list[launches.LaunchRecord]) -> None:
    kafka = settings.kafka
    async with started(make_producer(kafka, "test-ledger"), kafka) as producer:
        await launches.write(producer, settings.topic.launches, records)


def created(outcome: str = "created") -> float:
    value: float = metrics.CREATES.labels(outcome)._value.get()
    return value


async def test_a_request_again_after_its_pod_was_deleted_is_a_duplicate_not_a_second_pod(
    launcher_env: SetEnv, core_v1: client.CoreV1Api
) -> None:
    s = launcher_env()
    keys = [TaskKey("ledger", f"t{i}", "r1") for i in range(4)]
    async with launcher_run(s):
        await publish(s, [request(k) for k in keys])
        first = await read_events(s, len(keys))
    records = [launches.decode_record(r.value) for r in await read_all(s, s.topic.launches)]
    assert Counter(r["status"] for r in records if r) == {"launching": len(keys)}

    # What the watcher does when a pod ends: `finished` first, then the pod is deleted.
    await write_records(
        s, [launches.make_record(k, LaunchStatus.FINISHED, "watcher") for k in keys]
    )
    for key in keys:
        await asyncio.to_thread(core_v1.delete_namespaced_pod, pods.pod_name(key), "default")
    await eventually(lambda: asyncio.to_thread(lambda: not managed_pods(core_v1)), timeout_s=30)

    before = created()
    async with launcher_run(s) as stage:  # a new launcher: it knows only what the ledger says
        await publish(s, [request(k) for k in keys])  # re-published, as a replay would
        again = await read_events(s, 2 * len(keys))
        assert len(stage.in_flight) == 0
    assert created() == before
    assert await asyncio.to_thread(managed_pods, core_v1) == []
    assert {e["event_id"] for e in again} == {e["event_id"] for e in first}, "same facts"


async def test_a_request_twice_in_one_batch_is_one_pod_and_one_fact(
    launcher_env: SetEnv, core_v1: client.CoreV1Api
) -> None:
    """A batch writes its `launching` records at once: a try that comes twice in it (published
    twice) still gets one pod, and both copies report the same `launched` fact."""
    s = launcher_env()
    key, other = TaskKey("ledger", "twice", "r1"), TaskKey("ledger", "once", "r1")
    async with launcher_run(s) as stage:
        await publish(s, [request(key), request(other), request(key)])
        events = await read_events(s, 3)
        assert len(stage.in_flight) == 2
    names = sorted(p["metadata"]["name"] for p in await asyncio.to_thread(managed_pods, core_v1))
    assert names == sorted([pods.pod_name(key), pods.pod_name(other)])
    twice = [e for e in events if TaskKey.from_wire(e["key"]) == key]
    assert [e["state"] for e in twice] == ["launched", "launched"]
    assert twice[0]["event_id"] == twice[1]["event_id"]


async def test_a_cancelled_try_is_never_launched(
    launcher_env: SetEnv, core_v1: client.CoreV1Api
) -> None:
    s = launcher_env()
    cancelled, other = TaskKey("ledger", "cancelled", "r1"), TaskKey("ledger", "other", "r1")
    await write_records(s, [launches.make_record(cancelled, LaunchStatus.CANCELLED, "test")])
    async with launcher_run(s):
        await publish(s, [request(cancelled), request(other)])
        [event] = await read_events(s, 1)
        await eventually(lambda: asyncio.to_thread(lambda: len(managed_pods(core_v1)) == 1))
    assert TaskKey.from_wire(event["key"]) == other
    names = [p["metadata"]["name"] for p in await asyncio.to_thread(managed_pods, core_v1)]
    assert names == [pods.pod_name(other)]


async def test_a_cancel_the_launcher_handles_is_kept_in_the_ledger_for_later_deliveries(
    launcher_env: SetEnv, core_v1: client.CoreV1Api
) -> None:
    """The cancel reaches the launcher only in its request stream (the control topic holds
    nothing), so a new launcher knows of it from the ledger alone."""
    s = launcher_env()
    key = TaskKey("ledger", "stopped", "r1")
    slow = {"pod_override": {"metadata": {"annotations": {RUN_SECONDS: "60"}}}}
    control = messages.encode(messages.make_control(key, "not needed", "alice"))
    async with launcher_run(s):
        await publish(s, [request(key, executor_config=slow)])
        await read_events(s, 1)
        await publish_raw(s, s.topic.kubernetes, [(key.partition_key, control)])
        events = await read_events(s, 2)
    assert [e["state"] for e in events] == ["launched", "cancelled"]
    records = [launches.decode_record(r.value) for r in await read_all(s, s.topic.launches)]
    assert [(r["status"], r.get("reason")) for r in records if r] == [
        ("launching", None),
        ("cancelled", "not needed"),
    ]
    await eventually(lambda: asyncio.to_thread(lambda: not managed_pods(core_v1)), timeout_s=30)

    before, skipped = created(), created("cancelled")

    async def skipped_as_cancelled() -> bool:
        return created("cancelled") == skipped + 1

    async with launcher_run(s):
        await publish(s, [request(key, executor_config=slow)])  # re-published, as a replay would
        await eventually(skipped_as_cancelled)
    assert created() == before
    assert await asyncio.to_thread(managed_pods, core_v1) == []


async def test_a_launching_record_without_pod_or_finish_means_the_pod_was_never_made(
    launcher_env: SetEnv, core_v1: client.CoreV1Api
) -> None:
    """The launcher died after its write-ahead record and before the create: launch it."""
    s = launcher_env()
    key = TaskKey("ledger", "interrupted", "r1")
    await write_records(s, [launches.make_record(key, LaunchStatus.LAUNCHING, "launcher")])
    async with launcher_run(s):
        await publish(s, [request(key)])
        [event] = await read_events(s, 1)
    assert event["state"] == "launched"
    names = [p["metadata"]["name"] for p in await asyncio.to_thread(managed_pods, core_v1)]
    assert names == [pods.pod_name(key)]


async def test_adoption_counts_only_pods_whose_try_has_not_ended(
    launcher_env: SetEnv, kube_emulator: KubeEmulator
) -> None:
    """Pods that stay Pending after their `failed` was reported (ImagePullBackOff, kept for
    debugging) must not hold slots after a restart, or enough restarts stop all launches."""
    s = launcher_env()
    ended = [TaskKey("adopt", f"ended{i}", "r1") for i in range(3)]
    live = TaskKey("adopt", "live", "r1")
    slow = {"metadata": {"annotations": {RUN_SECONDS: "60"}}}
    async with launcher_run(s):
        config = {"pod_override": slow}
        await publish(s, [request(k, executor_config=config) for k in [*ended, live]])
        await read_records(s, s.topic.events, 4)
    finished = [launches.make_record(k, LaunchStatus.FINISHED, "watcher") for k in ended]
    await write_records(s, finished)

    async with launcher_run(s) as stage:
        assert len(stage.in_flight) == 1 and live in stage.in_flight


async def test_a_try_submitted_before_the_ledgers_horizon_is_failed_unless_the_ledger_knows_it(
    launcher_env: SetEnv, core_v1: client.CoreV1Api
) -> None:
    s = launcher_env()
    fresh, stale, known = (TaskKey("horizon", name, "r1") for name in ("fresh", "stale", "known"))
    long_ago = (datetime.now(UTC) - timedelta(days=8)).isoformat()  # retention: 7 days
    await write_records(s, [launches.make_record(known, LaunchStatus.FINISHED, "watcher")])
    before = created("expired")
    async with launcher_run(s):
        await publish(s, [request(fresh), request(stale, submitted_at=long_ago),
                          request(known, submitted_at=long_ago)])  # fmt: skip
        found = {TaskKey.from_wire(e["key"]): e for e in await read_events(s, 3)}
    assert found[fresh]["state"] == "launched"
    assert found[known]["state"] == "launched", "the ledger's word stands: no second pod"
    assert found[stale]["state"] == "failed"
    assert "before the launch ledger's horizon (7 days)" in (found[stale]["reason"] or "")
    assert created("expired") == before + 1
    names = {p["metadata"]["name"] for p in await asyncio.to_thread(managed_pods, core_v1)}
    assert names == {pods.pod_name(fresh)}


async def test_a_pod_pending_since_before_the_ledgers_horizon_holds_no_slot_after_a_restart(
    launcher_env: SetEnv, kube_emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its try's records are forgotten, so the ledger cannot say it ended: a pod still Pending
    that long is one whose end was told (an image that never pulls, kept for debugging)."""
    monkeypatch.setenv("PIPELINE_TOPIC_LAUNCHES_RETENTION_S", "3")
    s = launcher_env()
    kube_emulator.faults.update(stuck_pending_images="stuck/*")
    stuck, running = TaskKey("aged", "stuck", "r1"), TaskKey("aged", "running", "r1")
    slow = {"pod_override": {"metadata": {"annotations": {RUN_SECONDS: "60"}}}}
    async with launcher_run(s):
        await publish(s, [request(stuck, image="stuck/app:1"),
                          request(running, executor_config=slow)])  # fmt: skip
        await read_events(s, 2)
    await asyncio.sleep(3.5)  # the pods' age is what is judged: let them pass the horizon

    async with launcher_run(s) as stage:
        assert running in stage.in_flight, "a running pod holds its slot at any age"
        assert len(stage.in_flight) == 1
