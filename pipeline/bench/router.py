"""`pipeline bench router`: the router stage against a bare consume-and-produce pipe.

Both read the same N pre-published requests from one sandbox broker through the same
batch loop (`consume_batches`, the router's batch size, the same producer settings); the
pipe forwards each record's bytes unchanged to one topic, the router validates, stamps and
routes it and publishes its `queued` event. Each is timed from its first batch to the end
of the batch that completes N (group joins are not timed); rounds alternate and the best
of each counts, so a noisy neighbour on the machine hurts both alike.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from pipeline import messages
from pipeline.bench import BenchResult
from pipeline.config import RouterSettings, Settings, TopicSettings
from pipeline.kafka import (
    Batch,
    consume_batches,
    create_topics,
    make_consumer,
    make_producer,
    send_all,
    started,
)
from pipeline.messages import TaskKey
from pipeline.router import Router
from pipeline.sandbox.broker import tansu_broker
from pipeline.sandbox.profile import sandbox_kafka

DEFAULT_N = 20_000
ROUNDS = 3
PARTITIONS = 4
PUBLISH_CHUNK = 2000


class Throughput:
    """Records per second from the first handled batch until `n` records were handled."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.handled = 0
        self.began: float | None = None
        self.ended: float | None = None
        self.done = asyncio.Event()

    def batch_started(self) -> None:
        if self.began is None:
            self.began = time.perf_counter()

    def batch_handled(self, batch: Batch) -> None:
        self.handled += sum(len(records) for records in batch.values())
        if self.handled >= self.n and not self.done.is_set():
            self.ended = time.perf_counter()
            self.done.set()

    @property
    def per_s(self) -> float:
        assert self.began is not None and self.ended is not None
        return self.handled / (self.ended - self.began)


class TimedRouter(Router):
    """The router stage, unchanged, with its batch handler timed."""

    def __init__(self, settings: Settings, meter: Throughput) -> None:
        super().__init__(settings)
        self.meter = meter

    async def handle(self, batch: Batch) -> None:
        self.meter.batch_started()
        await super().handle(batch)
        self.meter.batch_handled(batch)


async def pipe(settings: Settings, n: int, out_topics: tuple[str, str]) -> float:
    """The baseline: the same loop and producer and the same Kafka I/O as the router (each
    record to two topics, as the router sends a routed request and its `queued` event),
    forwarding the bytes with no work between."""
    kafka, meter = settings.kafka, Throughput(n)
    consumer = make_consumer(
        kafka, settings.topic.requests, group_id=f"bench-pipe-{uuid.uuid4().hex}", client_id="pipe"
    )

    async with started(make_producer(kafka, "pipe"), kafka) as producer:

        async def forward(batch: Batch) -> None:
            meter.batch_started()
            out = [(t, r.key, r.value) for rs in batch.values() for r in rs for t in out_topics]
            await send_all(producer, out)
            meter.batch_handled(batch)

        async with started(consumer, kafka):
            await consume_batches(
                consumer, forward, meter.done, max_records=settings.router.batch_size
            )
    return meter.per_s


async def router(settings: Settings, n: int) -> float:
    """The subject: the router stage run as `pipeline run router` runs it, minus the process."""
    meter = Throughput(n)
    group = {"group_id": f"bench-router-{uuid.uuid4().hex}"}
    stage = TimedRouter(settings.updated(router=group), meter)
    await stage.run(meter.done)
    return meter.per_s


async def prepublish(settings: Settings, n: int) -> None:
    """N valid requests, half for each executor, under their task keys."""
    topic = settings.topic.requests
    async with started(make_producer(settings.kafka, "bench"), settings.kafka) as producer:
        for start in range(0, n, PUBLISH_CHUNK):
            chunk = []
            for i in range(start, min(start + PUBLISH_CHUNK, n)):
                key = TaskKey("bench", f"task-{i % 500}", f"run-{i // 500}")
                queue = settings.kubernetes_queue if i % 2 else "default"
                command = ["airflow", "tasks", "run", "bench", key.task_id, key.run_id]
                request = messages.make_request(key, command, queue, labels={"team": "bench"})
                chunk.append((topic, key.partition_key, messages.encode(request)))
            await send_all(producer, chunk)


def bench_settings(bootstrap: str) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    topics = {role: f"bench.{role}.{suffix}" for role in ("requests", "kubernetes", "celery",
              "events", "state", "dlq")}  # fmt: skip
    return Settings(
        kafka=sandbox_kafka(bootstrap),
        topic=TopicSettings(**topics, partitions=PARTITIONS),
        router=RouterSettings(),
    )


async def run(n: int) -> BenchResult:
    with tansu_broker() as broker:
        settings = bench_settings(broker.bootstrap_servers)
        await create_topics(settings.kafka, settings.topic)
        await prepublish(settings, n)
        baseline: list[float] = []
        subject: list[float] = []
        for _ in range(ROUNDS):
            baseline.append(await pipe(settings, n, (settings.topic.state, settings.topic.dlq)))
            subject.append(await router(settings, n))
    return BenchResult(
        name="router",
        baseline="aiokafka pipe, 1 in -> 2 out",
        subject="router stage",
        baseline_per_s=max(baseline),
        subject_per_s=max(subject),
        params={
            "n": n,
            "batch_size": settings.router.batch_size,
            "partitions": PARTITIONS,
            "rounds": ROUNDS,
        },
        extra={
            "rounds_baseline_per_s": [round(x) for x in baseline],
            "rounds_subject_per_s": [round(x) for x in subject],
        },
    )
