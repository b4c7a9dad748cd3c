"""`pipeline bench celery`: the Celery path (dispatcher + monitor) against a bare send_task loop.

Both drive the same real worker subprocess (`pipeline celery-worker`, prefork) with the same
task and the same no-op command (`true`), so the worker's cost is common to both and the
ratio is what the pipeline adds: Kafka in and out, dispatch records, bulk state polling.
The baseline sends N tasks in a loop and waits for every result; the subject is timed from
the dispatcher's first batch of N pre-published requests until the monitor's N-th terminal
event was read back. The arms alternate over three rounds (each subject round on topics and
consumer groups of its own) and the medians count. A sandbox broker and a Redis db of its own
(on the local Redis) are used and cleaned up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import redis

from pipeline.bench import BenchResult
from pipeline.celery_bridge.app import TASK_NAME, make_app
from pipeline.celery_bridge.dispatcher import CeleryDispatcher
from pipeline.celery_bridge.monitor import CeleryMonitor
from pipeline.config import Settings
from pipeline.kafka import Batch, create_topics, make_consumer, make_producer, send_all, started
from pipeline.messages import TaskKey, encode, make_request
from pipeline.sandbox.broker import tansu_broker
from pipeline.sandbox.profile import sandbox_env

DEFAULT_N = 500
ROUNDS = 3
REDIS = "redis://127.0.0.1:6379"
CONCURRENCY = 2
POLL_INTERVAL_S = 0.2
COMMAND = ["true"]
LOCK = "pipeline-redis-db-claim"
"""One lock key for every claimer (test sessions and benches), so no two share a db."""


@contextlib.contextmanager
def redis_db(url: str = REDIS) -> Iterator[int]:
    """A Redis db nobody else holds (the lock key claims it), emptied before and after."""
    for db in range(15, 1, -1):
        client = redis.Redis.from_url(f"{url}/{db}")
        if not client.set(LOCK, os.getpid(), nx=True, ex=3600):
            client.close()
            continue
        try:
            for key in client.scan_iter():
                if key != LOCK.encode():
                    client.delete(key)
            yield db
        finally:
            client.flushdb()
            client.close()
        return
    raise RuntimeError("no free Redis db (2..15 are all claimed)")


def bench_env(bootstrap: str, db: int, queue: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    env = {f"PIPELINE_TOPIC_{role.upper()}": f"bench.{role}.{suffix}"
           for role in ("requests", "kubernetes", "celery", "events", "state", "dlq")}  # fmt: skip
    return (
        env
        | sandbox_env()
        | {
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PIPELINE_TOPIC_PARTITIONS": "4",
            "PIPELINE_CELERY_BROKER_URL": f"{REDIS}/{db}",
            "PIPELINE_CELERY_RESULT_BACKEND": f"{REDIS}/{db}",
            "PIPELINE_CELERY_QUEUES": orjson.dumps([queue]).decode(),
            "PIPELINE_CELERY_MONITOR_POLL_INTERVAL_S": str(POLL_INTERVAL_S),
            "PIPELINE_CELERY_DISPATCHER_GROUP_ID": f"bench-dispatcher-{suffix}",
            "PIPELINE_CELERY_MONITOR_GROUP_ID": f"bench-monitor-{suffix}",
            "PIPELINE_SECURITY_ALLOWED_COMMANDS": orjson.dumps([COMMAND]).decode(),
            "PIPELINE_RUNTIME_HTTP_PORT": "0",
        }
    )


@contextlib.contextmanager
def worker(env: dict[str, str], settings: Settings) -> Iterator[None]:
    """A `pipeline celery-worker` process group, ready when yielded, always killed after."""
    hostname = f"bench-{uuid.uuid4().hex[:6]}@pipeline"
    argv = [
        sys.executable, "-c", "from pipeline.cli import main; main()",
        "celery-worker", "-n", hostname, "-c", str(CONCURRENCY), "-l", "WARNING",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, env={**os.environ, **env}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    app = make_app(settings.celery)
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[hostname], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the benchmark's celery worker did not start")
        yield
    finally:
        app.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait()


def bare_send_loop(settings: Settings, queue: str, n: int) -> float:
    """The baseline: send N tasks in a loop, then wait for every result."""
    app = make_app(settings.celery)
    try:
        ids = [str(uuid.uuid4()) for _ in range(n)]
        key = TaskKey("bench", "bare", "run").to_wire()
        began = time.perf_counter()
        for task_id in ids:
            payload: dict[str, Any] = {"key": key, "command": COMMAND, "env": {}}
            app.send_task(TASK_NAME, args=[payload], task_id=task_id, queue=queue)
        for task_id in ids:
            app.AsyncResult(task_id).get(timeout=120)
        return n / (time.perf_counter() - began)
    finally:
        app.close()


class TimedDispatcher(CeleryDispatcher):
    """The dispatcher stage, unchanged, noting when its first batch arrived."""

    began: float | None = None

    async def handle(self, batch: Batch) -> None:
        if self.began is None:
            self.began = time.perf_counter()
        await super().handle(batch)


async def pipeline_path(settings: Settings, queue: str, n: int) -> float:
    """The subject: N requests from the celery topic to N terminal events."""
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    requests = [make_request(TaskKey("bench", f"t{i}", run_id), COMMAND, queue) for i in range(n)]
    async with started(make_producer(settings.kafka, "bench"), settings.kafka) as producer:
        await send_all(
            producer,
            [(settings.topic.celery, TaskKey.from_wire(r["key"]).partition_key, encode(r))
             for r in requests],
        )  # fmt: skip
    stopping = asyncio.Event()
    dispatcher = TimedDispatcher(settings)
    stages = [asyncio.create_task(s.run(stopping)) for s in (CeleryMonitor(settings), dispatcher)]
    try:
        ended = await _terminal_events(settings, n)
    finally:
        stopping.set()
        await asyncio.gather(*stages)
    assert dispatcher.began is not None
    return n / (ended - dispatcher.began)


async def _terminal_events(settings: Settings, n: int) -> float:
    """Read events until N distinct tasks finished; the time the last one was read."""
    consumer = make_consumer(settings.kafka, settings.topic.events, group_id=None,
                             client_id="bench-events")  # fmt: skip
    finished: set[str] = set()
    async with started(consumer, settings.kafka), asyncio.timeout(600):
        while len(finished) < n:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    event = orjson.loads(record.value or b"{}")
                    if event.get("state") in ("success", "failed"):
                        if event["state"] == "failed":
                            raise RuntimeError(f"benchmark task failed: {event.get('reason')}")
                        finished.add(event["key"]["task_id"])
    return time.perf_counter()


def round_settings(settings: Settings) -> Settings:
    """Topics and consumer groups of a round's own, so it reads only its requests and events."""
    tag = uuid.uuid4().hex[:8]
    return settings.updated(
        topic={role: f"bench.{role}.{tag}" for role in ("celery", "events", "dlq")},
        celery={
            "dispatcher_group_id": f"bench-dispatcher-{tag}",
            "monitor_group_id": f"bench-monitor-{tag}",
        },
    )


async def run(n: int) -> BenchResult:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    baseline: list[float] = []
    subject: list[float] = []
    with tansu_broker() as broker, redis_db() as db:
        env = bench_env(broker.bootstrap_servers, db, queue)
        settings = Settings(**_nested(env))

        async def pipeline_round() -> float:
            fresh = round_settings(settings)
            await create_topics(fresh.kafka, fresh.topic)
            return await pipeline_path(fresh, queue, n)

        arms: list[tuple[list[float], Callable[[], Awaitable[float]]]] = [
            (baseline, lambda: asyncio.to_thread(bare_send_loop, settings, queue, n)),
            (subject, pipeline_round),
        ]
        with worker(env, settings):
            for r in range(ROUNDS):  # the order alternates, so neither arm always goes first
                for i in range(len(arms)):
                    results, arm = arms[(r + i) % len(arms)]
                    results.append(await arm())
    return BenchResult(
        name="celery",
        baseline="bare send_task loop + results",
        subject="dispatcher + monitor",
        baseline_per_s=statistics.median(baseline),
        subject_per_s=statistics.median(subject),
        params={
            "n": n,
            "rounds": ROUNDS,
            "worker_concurrency": CONCURRENCY,
            "command": COMMAND,
            "monitor_poll_interval_s": POLL_INTERVAL_S,
            "dispatch_concurrency": settings.celery.dispatch_concurrency,
        },
        extra={
            "rounds_baseline_per_s": [round(x, 1) for x in baseline],
            "rounds_subject_per_s": [round(x, 1) for x in subject],
        },
    )


def _nested(env: dict[str, str]) -> dict[str, Any]:
    """Settings from PIPELINE_* names without touching this process's environment."""
    groups: dict[str, dict[str, Any]] = {}
    for name, value in env.items():
        group, _, field = name.removeprefix("PIPELINE_").lower().partition("_")
        groups.setdefault(group, {})[field] = orjson.loads(value) if value[:1] in "[{" else value
    return groups
