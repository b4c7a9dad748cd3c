"""`pipeline run watcher` processes killed with SIGKILL: no pod's end is lost, ids stay stable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes import client

from pipeline.config import Settings
from pipeline.messages import TaskEvent, TaskKey
from pipeline.sandbox.kube import KubeEmulator
from pipeline.watcher.checkpoint import Checkpoint
from tests.fixtures.kafka import read_all
from tests.fixtures.polling import eventually
from tests.integration.watcher.support import (
    WatcherProcess,
    a_failed_end_with_a_slow_log_read,
    by_task,
    create_pod,
    delete_pod,
    ids_per_fact,
    kept_for,
    summary,
    task,
    terminal,
    wait_for_ends,
    wait_for_events,
)

pytestmark = pytest.mark.integration


def running(found: list[TaskEvent], keys: list[TaskKey]) -> bool:
    grouped = by_task(found)
    return all(any(e["state"] == "running" for e in grouped.get(k, [])) for k in keys)


async def all_finished(api: client.CoreV1Api) -> bool:
    pods = await asyncio.to_thread(api.list_namespaced_pod, "default")
    return all(pod.status.phase in ("Succeeded", "Failed") for pod in pods.items)


async def test_sigkill_and_restart_loses_no_end(
    watcher_settings: Settings, core_v1: client.CoreV1Api, tmp_path: Path
) -> None:
    watcher = WatcherProcess(tmp_path / "watcher.log")
    warmup, keys, doomed = task(0), [task(n) for n in range(1, 4)], task(9)
    try:
        await watcher.start()
        await create_pod(core_v1, warmup)
        await wait_for_ends(watcher_settings, [warmup])
        for key in keys:
            await create_pod(core_v1, key, run_seconds=1.5)
        doomed_name = await create_pod(core_v1, doomed, run_seconds=60)
        await wait_for_events(watcher_settings, lambda f: running(f, [*keys, doomed]))
        await watcher.kill()
        # While no watcher runs: the pods finish and one is deleted under it.
        await delete_pod(core_v1, doomed_name)
        await eventually(lambda: all_finished(core_v1), timeout_s=15)
        await watcher.start()
        found = await wait_for_ends(watcher_settings, [*keys, doomed])
        assert await watcher.stop() == 0
    finally:
        await watcher.kill()
    assert all(summary(terminal(found, k))[0] == "success" for k in keys)
    state, reason, _ = summary(terminal(found, doomed))
    assert state == "failed"
    assert reason.startswith("pod deleted while running")


async def test_two_replicas_one_killed_lose_nothing_and_agree_on_ids(
    watcher_settings: Settings, core_v1: client.CoreV1Api, tmp_path: Path
) -> None:
    first, second = WatcherProcess(tmp_path / "a.log"), WatcherProcess(tmp_path / "b.log")
    warmup, keys = task(0), [task(n) for n in range(1, 7)]
    try:
        await asyncio.gather(first.start(), second.start())
        await create_pod(core_v1, warmup)
        await wait_for_ends(watcher_settings, [warmup])
        for key in keys:
            await create_pod(core_v1, key, run_seconds=0.5)
        await first.kill()
        found = await wait_for_ends(watcher_settings, keys)
        assert await second.stop() == 0
    finally:
        await first.kill()
        await second.kill()
    assert all(summary(terminal(found, k))[0] == "success" for k in keys)
    assert all(len(ids) == 1 for ids in ids_per_fact(found).values())


async def test_a_kept_pod_whose_end_was_checkpointed_before_its_log_was_kept_gets_it_kept(
    watcher_settings: Settings,
    kube_emulator: KubeEmulator,
    core_v1: client.CoreV1Api,
    tmp_path: Path,
) -> None:
    """Killed between a failed pod's end (published, and behind the saved checkpoint) and its
    finishing (log kept, launch record written): the restart still finishes it, though the
    pod is kept (only the policy's deletions are the sweep's to retry)."""
    watcher = WatcherProcess(tmp_path / "watcher.log")
    try:
        ended = await a_failed_end_with_a_slow_log_read(
            watcher, watcher_settings, kube_emulator, core_v1
        )
        failing = TaskKey.from_wire(ended["key"])
        await eventually(lambda: checkpoint_past(watcher_settings, ended), timeout_s=5)
        assert not await kept_for(watcher_settings, failing), "finished before the kill"
        await watcher.kill()
        kube_emulator.faults.update(latency_seconds=0.0)
        await watcher.start()
        await eventually(lambda: kept_for(watcher_settings, failing), timeout_s=30)
        assert await watcher.stop() == 0
    finally:
        await watcher.kill()


async def checkpoint_past(settings: Settings, event: TaskEvent) -> bool:
    saved = await read_all(settings, settings.topic.watcher_checkpoints)
    last = Checkpoint.read(saved[-1].value) if saved else None
    return last is not None and int(last.resource_version) >= int(event["resource_version"])
