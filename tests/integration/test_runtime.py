"""The stage runtime in a real process: probes, metrics, and stopping on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from aiokafka import TopicPartition

from pipeline import messages
from pipeline.config import Settings
from pipeline.kafka import make_consumer, make_producer, send_all, started
from pipeline.messages import TaskKey
from tests.fixtures.polling import eventually

pytestmark = pytest.mark.integration


@dataclass
class StageProcess:
    process: asyncio.subprocess.Process
    lines: list[dict[str, object]] = field(default_factory=list)

    async def wait_for_log(self, message: str, timeout_s: float = 30) -> dict[str, object]:
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout_s):
            while True:
                for line in self.lines:
                    if line.get("msg") == message:
                        return line
                raw = await self.process.stderr.readline()
                assert raw, f"stage exited before logging {message!r}: {self.lines}"
                self.lines.append(orjson.loads(raw))

    async def url(self) -> str:
        listening = await self.wait_for_log("http listening")
        return f"http://127.0.0.1:{listening['port']}"


StartStage = Callable[..., Awaitable[StageProcess]]


@pytest.fixture
async def start_stage(topics: Settings) -> AsyncIterator[StartStage]:
    started_processes: list[asyncio.subprocess.Process] = []

    async def start(*args: str, deadline_s: float = 10) -> StageProcess:
        env = {**os.environ, "PIPELINE_RUNTIME_LOG_FORMAT": "json",
               "PIPELINE_RUNTIME_SHUTDOWN_TIMEOUT_S": str(deadline_s)}  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.sample_stage", *args,
            stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        started_processes.append(process)
        return StageProcess(process)

    yield start
    for process in started_processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def is_ready(url: str) -> bool:
    return (await get(f"{url}/readyz"))[0] == 200


async def committed(settings: Settings, group: str) -> int:
    consumer = make_consumer(settings.kafka, group_id=group, client_id="check")
    async with started(consumer, settings.kafka):
        total = 0
        for p in range(settings.topic.partitions):
            total += await consumer.committed(TopicPartition(settings.topic.requests, p)) or 0
        return total


async def test_probes_and_metrics_are_served(start_stage: StartStage, topics: Settings) -> None:
    stage = await start_stage()
    url = await stage.url()
    await eventually(lambda: is_ready(url))
    assert (await get(f"{url}/healthz"))[0] == 200
    status, body = await get(f"{url}/metrics")
    assert status == 200 and "python_info" in body


async def test_sigterm_finishes_the_work_commits_and_exits_0(
    start_stage: StartStage, topics: Settings
) -> None:
    stage = await start_stage()
    producer = make_producer(topics.kafka, "test")
    async with started(producer, topics.kafka):
        requests = [
            messages.make_request(TaskKey("d", f"t{i}", "r"), ["echo"], "q") for i in range(120)
        ]
        await send_all(producer, [
            (topics.topic.requests, TaskKey.from_wire(r["key"]).partition_key, messages.encode(r))
            for r in requests
        ])  # fmt: skip
    handled = 0
    while handled < 120:
        handled += int(str((await stage.wait_for_log("handled"))["records"]))
        stage.lines.clear()
    stage.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(stage.process.wait(), 15) == 0
    await stage.wait_for_log("stopped cleanly")
    assert await committed(topics, "sample") == 120


async def test_a_stage_that_ignores_stop_is_ended_at_the_deadline(
    start_stage: StartStage, topics: Settings
) -> None:
    stage = await start_stage("stubborn", deadline_s=1)
    url = await stage.url()
    await eventually(lambda: is_ready(url))
    stage.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(stage.process.wait(), 10) == 1
    await stage.wait_for_log("shutdown deadline passed; cancelling in-flight work")
