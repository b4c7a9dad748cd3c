"""The Stages page: each stage's replicas (health, readiness) and its consumer lag per partition.

Health comes from the runtime port every stage serves (`/healthz`, `/readyz`), at the URLs
the operator lists in `ui.stages`. Lag comes from Kafka itself: a stage's consumer group's
committed offsets against each partition's fetch high-water, and the group's member count
is its live replica count, so lag needs no URL at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline.config import Settings
from pipeline.kafka import (
    connection_options,
    fetch_highwaters,
    make_consumer,
    started,
    topic_partitions,
)


@dataclass(frozen=True, slots=True)
class Replica:
    url: str
    healthy: bool | None
    ready: bool | None
    detail: str


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(self.end - self.committed, 0)


@dataclass
class GroupLag:
    group: str
    members: int | None = None
    partitions: list[PartitionLag] = field(default_factory=list)
    error: str | None = None

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True, slots=True)
class ConsumerGroup:
    """A stage's consumer group and the topics it reads."""

    group: str
    topics: tuple[str, ...]


def stage_groups(settings: Settings) -> dict[str, ConsumerGroup]:
    """The consumer group of each stage that has one (the watcher follows Kubernetes)."""
    topic = settings.topic
    return {
        "router": ConsumerGroup(settings.router.group_id, (topic.requests,)),
        "launcher": ConsumerGroup(settings.launcher.group_id, (topic.kubernetes,)),
        "celery-dispatcher": ConsumerGroup(settings.celery.dispatcher_group_id, (topic.celery,)),
        "celery-monitor": ConsumerGroup(settings.celery.monitor_group_id, (topic.events,)),
        "reducer": ConsumerGroup(
            settings.reducer.app_id or f"reducer-{topic.state}",
            (topic.events, topic.kubernetes, topic.celery),
        ),
    }


async def probe(session: aiohttp.ClientSession, url: str) -> Replica:
    """One replica's /healthz and /readyz; an unreachable one is unhealthy, not an error."""
    base = url.rstrip("/")
    answers: list[tuple[int, Any]] = []
    try:
        for path in ("/healthz", "/readyz"):
            async with session.get(base + path, timeout=aiohttp.ClientTimeout(total=2)) as r:
                answers.append((r.status, orjson.loads(await r.read())))
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        return Replica(url, False, False, f"unreachable: {type(exc).__name__}")
    (health_status, health), (ready_status, _) = answers
    detail = str(health.get("detail") or ("recovering" if health.get("recovering") else "ok"))
    return Replica(url, health_status == 200, ready_status == 200, detail)


async def group_lags(settings: Settings, groups: dict[str, ConsumerGroup]) -> dict[str, GroupLag]:
    """Lag per partition and member count of each group (errors per group, never raised).

    Partitions and their ends are read once for every topic involved, then each group's
    committed offsets are compared with them.
    """
    kafka = settings.kafka
    topics = sorted({t for g in groups.values() for t in g.topics})
    by_topic = {t: await topic_partitions(kafka, t) for t in topics}
    ends = await fetch_highwaters(kafka, [tp for tps in by_topic.values() for tp in tps])
    admin = AIOKafkaAdminClient(**connection_options(kafka), client_id=f"{kafka.client_id}-ui")
    found: dict[str, GroupLag] = {}
    async with started(admin, kafka):
        for stage, group in groups.items():
            partitions = [tp for t in group.topics for tp in by_topic[t]]
            found[stage] = await _group_lag(admin, settings, group.group, partitions, ends)
    return found


async def _group_lag(
    admin: AIOKafkaAdminClient,
    settings: Settings,
    group: str,
    partitions: list[TopicPartition],
    ends: dict[TopicPartition, int],
) -> GroupLag:
    result = GroupLag(group)
    try:
        committed = await committed_offsets(settings, group, partitions)
    except (KafkaError, TimeoutError) as exc:
        result.error = type(exc).__name__
        return result
    result.partitions = [
        PartitionLag(tp.topic, tp.partition, committed.get(tp, 0), ends[tp]) for tp in partitions
    ]
    with contextlib.suppress(KafkaError, TimeoutError, LookupError, AttributeError):
        result.members = _members(await admin.describe_consumer_groups([group]))
    return result


async def committed_offsets(
    settings: Settings, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The group's committed offsets, read as a member would (no join: manual assignment).

    A consumer's own OffsetFetch is what every stage already relies on, so it works on
    every broker the stages work on (the admin client's version does not decode on some).
    """
    consumer = make_consumer(settings.kafka, group_id=group, client_id="ui-lag")
    async with started(consumer, settings.kafka):
        consumer.assign(partitions)
        answers = [await consumer.committed(tp) for tp in partitions]
    return {
        tp: offset for tp, offset in zip(partitions, answers, strict=True) if offset is not None
    }


def _members(responses: list[Any]) -> int | None:
    """Members of the one described group, from the raw DescribeGroups response."""
    for response in responses:
        for described in response.to_object()["groups"]:
            return len(described["members"])
    return None


async def probe_all(
    session: aiohttp.ClientSession, stages: dict[str, list[str]]
) -> dict[str, list[Replica]]:
    names = list(stages)
    results = await asyncio.gather(
        *(asyncio.gather(*(probe(session, url) for url in stages[name])) for name in names)
    )
    return {name: list(replicas) for name, replicas in zip(names, results, strict=True)}
