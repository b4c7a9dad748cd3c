"""The router stage: requests in, routed requests, `queued` events and dead letters out.

A thin loop around `pipeline.routing`: fetch a batch, turn every record into its messages,
send them all and wait for the acks, and only then commit. Stateless, so N routers in one
consumer group split the partitions; a crash re-delivers the uncommitted batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from time import perf_counter

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalStateError
from prometheus_client import Counter, Gauge, Histogram

from pipeline import runtime
from pipeline.config import Settings
from pipeline.kafka import (
    Batch,
    all_started,
    consume_batches,
    make_consumer,
    make_producer,
    send_all,
)
from pipeline.messages import utc_now
from pipeline.routing import STAGE, Outcome, RouteTable, Source, route, route_control

log = logging.getLogger(__name__)

ROUTED = Counter("pipeline_router_routed_total", "Requests routed, per target.", ["target"])
DEAD_LETTERED = Counter(
    "pipeline_router_dead_lettered_total", "Records sent to the DLQ, per reason.", ["reason"]
)
BATCH_SECONDS = Histogram(
    "pipeline_router_batch_seconds",
    "Time to route, publish and get acks for one batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG = Gauge(
    "pipeline_router_consumer_lag",
    "Records behind the fetch high-water, per assigned partition.",
    ["topic", "partition"],
)


class Router(runtime.Stage):
    """Routes `tasks.requests` to the executor topics, and forwards each cancel on
    `tasks.control` to both of them; see `pipeline.routing` for the rules."""

    name = STAGE

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.table = RouteTable.from_settings(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._lag_shown: set[TopicPartition] = set()

    async def run(self, stopping: asyncio.Event) -> None:
        config = self.settings
        consumer = make_consumer(
            config.kafka,
            config.topic.requests,
            config.topic.control,
            group_id=config.router.group_id,
            client_id=STAGE,
            session_timeout_ms=config.router.session_timeout_ms,
        )
        producer = make_producer(config.kafka, STAGE)
        async with all_started(config.kafka, producer, consumer):
            self._consumer, self._producer = consumer, producer
            self.ready = True
            log.info("routing", extra={"topics": [config.topic.requests, config.topic.control]})
            await consume_batches(
                consumer, self.handle, stopping, max_records=config.router.batch_size
            )

    async def handle(self, batch: Batch) -> None:
        """Route every record, publish all outputs and wait for their acks (then it commits)."""
        assert self._producer is not None and self._consumer is not None
        began = perf_counter()
        table = self.table
        sources = [
            Source(r.topic, r.partition, r.offset, r.timestamp)
            for records in batch.values()
            for r in records
        ]
        records = (r for part in batch.values() for r in part)
        now = utc_now()  # one instant for the batch: it is routed (and acked) as one
        outcomes = [
            route_control(r.value, r.key, s, table)
            if r.topic == table.control_topic
            else route(r.value, r.key, s, table, now)
            for r, s in zip(records, sources, strict=True)
        ]
        await send_all(self._producer, [m for o in outcomes for m in o.messages])
        BATCH_SECONDS.observe(perf_counter() - began)
        count(zip(sources, outcomes, strict=True))
        self._lag_shown = await observe_lag(self._consumer, self._lag_shown)


def count(results: Iterable[tuple[Source, Outcome]]) -> None:
    """Metrics for a published batch; each dead letter is also logged with where it came from."""
    routed: dict[str, int] = {}
    for source, outcome in results:
        if outcome.target is not None:
            routed[outcome.target] = routed.get(outcome.target, 0) + 1
        elif outcome.reason is not None:
            DEAD_LETTERED.labels(outcome.reason.value).inc()
            log.warning(
                "dead-lettered",
                extra={
                    "reason": outcome.reason.value,
                    "source": f"{source.topic}/{source.partition}/{source.offset}",
                },
            )
    for target, n in routed.items():
        ROUTED.labels(target).inc(n)


async def observe_lag(
    consumer: AIOKafkaConsumer, shown: set[TopicPartition]
) -> set[TopicPartition]:
    """Set the lag gauge for the partitions this member owns now, drop those it no longer
    owns from `shown` (what the gauge holds), and return what it holds now. Children are
    kept between batches: making them anew per batch cost a tenth of the router's CPU."""
    owned = consumer.assignment()
    for tp in shown - owned:
        LAG.remove(tp.topic, str(tp.partition))
    shown = shown & owned
    for tp in owned:
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        try:
            position = await consumer.position(tp)
        except IllegalStateError:  # revoked by a rebalance since the fetch
            continue
        LAG.labels(tp.topic, str(tp.partition)).set(max(highwater - position, 0))
        shown.add(tp)
    return shown


def main(settings: Settings) -> int:
    """`pipeline run router`."""
    return runtime.main(Router(settings))
