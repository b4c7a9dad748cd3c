"""The events the scheduler and kubelet record, read back through the official client."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from kubernetes import client

from pipeline.sandbox.kube import FaultConfig, KubeEmulator
from tests.fixtures.kube import FAST, core_v1_for, phase_reached, pod_manifest, watch_until

pytestmark = pytest.mark.integration
NS = "default"


async def events_of(api: client.CoreV1Api, name: str) -> list[tuple[str, str, str, int]]:
    found = await asyncio.to_thread(
        api.list_namespaced_event, NS, field_selector=f"involvedObject.name={name}"
    )
    return [(e.type, e.reason, e.message, e.count) for e in found.items]


async def started(api: client.CoreV1Api, body: dict[str, Any], *phases: str) -> None:
    created = await asyncio.to_thread(api.create_namespaced_pod, NS, body)
    rv = created.metadata.resource_version
    await watch_until(api, phase_reached(body["metadata"]["name"], *phases), resource_version=rv)


async def test_a_pod_that_runs_records_the_kubelet_sequence(core_v1: client.CoreV1Api) -> None:
    await started(core_v1, pod_manifest("seq"), "Succeeded")
    reasons = [reason for _, reason, _, _ in await events_of(core_v1, "seq")]
    assert reasons == ["Scheduled", "Pulled", "Created", "Started"]


async def test_no_room_on_the_node_is_failed_scheduling() -> None:
    async with KubeEmulator(capacity=0, timings=FAST) as emulator:
        api = core_v1_for(emulator)
        await asyncio.to_thread(api.create_namespaced_pod, NS, pod_manifest("waits"))
        [(kind, reason, message, _)] = await events_of(api, "waits")
    assert (kind, reason) == ("Warning", "FailedScheduling")
    assert message.startswith("0/1 nodes are available")


async def test_image_pull_back_off_records_failed_and_backoff() -> None:
    faults = FaultConfig(image_pull_backoff_images="broken/*")
    async with KubeEmulator(timings=FAST, faults=faults) as emulator:
        api = core_v1_for(emulator)
        body = pod_manifest("pull", image="broken/image:1")
        created = await asyncio.to_thread(api.create_namespaced_pod, NS, body)

        def backing_off(events: list[dict[str, Any]]) -> bool:
            statuses = events[-1]["object"]["status"].get("containerStatuses") or [{}]
            waiting = statuses[0].get("state", {}).get("waiting", {})
            return bool(waiting.get("reason") == "ImagePullBackOff")

        await watch_until(api, backing_off, resource_version=created.metadata.resource_version)
        recorded = await events_of(api, "pull")
    assert ("Warning", "Failed", "Error: ErrImagePull", 1) in recorded
    assert ("Warning", "Failed", "Error: ImagePullBackOff", 1) in recorded
    assert any(reason == "BackOff" for _, reason, _, _ in recorded)


@pytest.mark.parametrize(("action", "reason"), [("oom_kill", "OOMKilling"), ("evict", "Evicted")])
async def test_disruptions_are_warnings(action: str, reason: str) -> None:
    body = pod_manifest("hit", command=[sys.executable, "-c", "import time; time.sleep(60)"])
    async with KubeEmulator(mode="process") as emulator:
        api = core_v1_for(emulator)
        await started(api, body, "Running")
        getattr(emulator, action)(NS, "hit")
        await watch_until(api, phase_reached("hit", "Failed"))
        recorded = await events_of(api, "hit")
    assert any(e[:2] == ("Warning", reason) for e in recorded)


async def test_repeated_backoff_is_one_event_with_a_count() -> None:
    body = pod_manifest("loop", command=[sys.executable, "-c", "raise SystemExit(1)"])
    body["spec"]["restartPolicy"] = "OnFailure"
    timings = FAST.__class__(restart_backoff_seconds=0.01)
    async with KubeEmulator(mode="process", timings=timings) as emulator:
        api = core_v1_for(emulator)
        created = await asyncio.to_thread(api.create_namespaced_pod, NS, body)

        def restarted_thrice(events: list[dict[str, Any]]) -> bool:
            statuses = events[-1]["object"]["status"].get("containerStatuses") or [{}]
            return int(statuses[0].get("restartCount", 0)) >= 3

        await watch_until(api, restarted_thrice, resource_version=created.metadata.resource_version)
        backoffs = [e for e in await events_of(api, "loop") if e[1] == "BackOff"]
    assert len(backoffs) == 1 and backoffs[0][3] >= 3
