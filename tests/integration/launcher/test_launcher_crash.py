"""Crash safety: `pipeline run launcher` SIGKILLed at random moments loses and duplicates nothing
visible: every task ends with one pod and one event id."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from kubernetes import client

from pipeline import messages, pods
from pipeline.config import Settings
from pipeline.kafka import make_consumer
from pipeline.messages import TaskEvent, TaskKey
from pipeline.sandbox.kube import PENDING_SECONDS, KubeEmulator
from tests.fixtures.kafka import assign_all
from tests.fixtures.polling import eventually
from tests.integration.launcher.support import SetEnv, managed_pods, publish, request

pytestmark = pytest.mark.integration

TASKS = 2000
KILLS = 4


class EventLog:
    """Every event on the topic, read continuously from the start by a background task."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []

    @asynccontextmanager
    async def following(self, settings: Settings) -> AsyncIterator[EventLog]:
        consumer = make_consumer(settings.kafka, group_id=None, client_id="test-events")
        await consumer.start()
        await assign_all(consumer, settings.topic.events)

        async def follow() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    self.events.extend(messages.decode_event(r.value) for r in records)

        task = asyncio.create_task(follow())
        try:
            yield self
        finally:
            task.cancel()
            await consumer.stop()

    def keys(self) -> set[TaskKey]:
        return {TaskKey.from_wire(e["key"]) for e in self.events}


async def start_launcher(log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "run", "launcher",
            env=dict(os.environ), stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip


async def test_sigkilled_launchers_leave_exactly_one_pod_and_event_per_task(
    launcher_env: SetEnv, kube_emulator: KubeEmulator, core_v1: client.CoreV1Api, tmp_path: Path
) -> None:
    s = launcher_env(creation_batch_size=50, max_concurrent_creates=8, parallelism=TASKS * 2)
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    keys = [TaskKey("crash", f"t{i}", "r", -1, 1) for i in range(TASKS)]
    pending = {"pod_override": {"metadata": {"annotations": {PENDING_SECONDS: "3600"}}}}
    await publish(s, [request(k, executor_config=pending) for k in keys])
    log = tmp_path / "launcher.log"

    processes: list[asyncio.subprocess.Process] = []
    try:
        async with EventLog().following(s) as seen:
            for _ in range(KILLS):
                process = await start_launcher(log)
                processes.append(process)
                before = kube_emulator.stats.requests.get("create", 0)

                async def progressed(mark: int = before) -> bool:
                    """This very process is creating pods (the dead one sends nothing more)."""
                    return kube_emulator.stats.requests.get("create", 0) > mark

                await eventually(progressed, timeout_s=60, interval_s=0.01)
                await asyncio.sleep(rng.uniform(0, 0.4))
                process.send_signal(signal.SIGKILL)
                assert await process.wait() == -signal.SIGKILL

            process = await start_launcher(log)
            processes.append(process)

            async def all_reported() -> bool:
                return len(seen.keys()) == TASKS

            await eventually(all_reported, timeout_s=120, interval_s=0.1)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0, log.read_text()[-3000:]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    note = f"(seed {seed}, {len(seen.events)} events)"
    by_key: dict[TaskKey, set[tuple[str, str]]] = defaultdict(set)
    for event in seen.events:
        by_key[TaskKey.from_wire(event["key"])].add((event["state"], event["event_id"]))
    assert set(by_key) == set(keys), note
    assert all(len(ids) == 1 and next(iter(ids))[0] == "launched" for ids in by_key.values()), note

    names = [p["metadata"]["name"] for p in await asyncio.to_thread(managed_pods, core_v1)]
    assert sorted(names) == sorted(pods.pod_name(k) for k in keys), note
    await assert_all_committed(s)


async def assert_all_committed(settings: Settings) -> None:
    """The clean stop committed every request: a restart would re-read nothing."""
    reader = make_consumer(settings.kafka, group_id=None, client_id="test-reader")
    group = make_consumer(settings.kafka, group_id=settings.launcher.group_id, client_id="t")
    await reader.start()
    await group.start()
    try:
        partitions = await assign_all(reader, settings.topic.kubernetes)
        ends: dict[TopicPartition, int] = {}
        async with asyncio.timeout(30):
            while len(ends) < len(partitions):
                await reader.getmany(timeout_ms=200)
                ends = {tp: hw for tp in partitions if (hw := reader.highwater(tp)) is not None}
        committed = {tp: await group.committed(tp) for tp in partitions}
        assert committed == ends
    finally:
        await reader.stop()
        await group.stop()
