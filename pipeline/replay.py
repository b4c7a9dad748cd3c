"""Replay a topic range: read it in order, refold it into fresh state, or re-publish it.

Ranges are read up to the fetch high-water (never `end_offsets`, which some brokers report
wrongly). `--rebuild` uses the reducer's own fold, so a rebuild is exactly what the live
reducer holds for the same records; across partitions, records are merged by timestamp
while each partition keeps its offset order (which is all the live reducer guarantees).
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from pipeline.config import KafkaSettings, Settings
from pipeline.kafka import fetch_highwaters, make_consumer, started, topic_partitions
from pipeline.messages import InvalidMessage, decode_event, decode_request, parse_time
from pipeline.reducer.fold import TaskState, attach_request, fold_event, state_key

Record: TypeAlias = ConsumerRecord[bytes, bytes]


@dataclass(frozen=True)
class Bound:
    """One end of a range: an offset (per partition) or a time (epoch milliseconds)."""

    offset: int | None = None
    time_ms: int | None = None

    @classmethod
    def parse(cls, text: str) -> Bound:
        """`1234` is an offset; anything else must be an ISO-8601 timestamp."""
        if text.isdigit():
            return cls(offset=int(text))
        try:
            moment = parse_time(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither an offset nor an ISO-8601 timestamp") from None
        if moment.tzinfo is None:
            raise ValueError(f"timestamp {text!r} needs a timezone (e.g. Z)")
        return cls(time_ms=int(moment.timestamp() * 1000))


async def resolve(
    consumer: AIOKafkaConsumer,
    kafka: KafkaSettings,
    tps: list[TopicPartition],
    start: Bound | None,
    end: Bound | None,
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """First offset and end offset (exclusive) of the range in each partition."""
    highwaters = await fetch_highwaters(kafka, tps)
    beginnings = await consumer.beginning_offsets(tps)
    first = _offsets_at(tps, start, beginnings, highwaters)
    last = _offsets_at(tps, end, highwaters, highwaters)
    return first, {tp: max(first[tp], last[tp]) for tp in tps}


def _offsets_at(
    tps: list[TopicPartition],
    bound: Bound | None,
    default: dict[TopicPartition, int],
    highwaters: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Offsets for a bound; a time bound scans the whole partition (see `in_time`).

    `offsets_for_times` is not used: the sandbox broker answers offset 0 (and the append
    time of the first batch) for every timestamp, and CreateTime timestamps need not grow
    with offsets anyway, so only a filtered scan is exact on every broker.
    """
    if bound is None or bound.offset is None:
        return dict(default)
    return {tp: min(bound.offset, highwaters[tp]) for tp in tps}


async def read_range(
    kafka: KafkaSettings,
    topic: str,
    start: Bound | None = None,
    end: Bound | None = None,
    *,
    partition: int | None = None,
    on_total: Callable[[int], None] | None = None,
) -> AsyncIterator[list[Record]]:
    """Batches of the records in [start, end) of every partition (or only `partition`), each
    partition in order.

    A time bound selects records by their timestamp (start inclusive, end exclusive).
    """
    tps = await topic_partitions(kafka, topic)
    if not tps:
        raise LookupError(f"topic {topic!r} does not exist")
    if partition is not None:
        if partition >= len(tps):
            raise LookupError(f"topic {topic!r} has partitions 0 to {len(tps) - 1}")
        tps = [tp for tp in tps if tp.partition == partition]
    consumer = make_consumer(kafka, group_id=None, client_id="replay")
    async with started(consumer, kafka):
        first, stop = await resolve(consumer, kafka, tps, start, end)
        if on_total is not None:
            on_total(sum(stop[tp] - first[tp] for tp in tps))
        pending = [tp for tp in tps if first[tp] < stop[tp]]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, first[tp])
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            records: list[Record] = []
            for tp, part in batch.items():
                records.extend(r for r in part if r.offset < stop[tp] and in_time(r, start, end))
                if part and part[-1].offset + 1 >= stop[tp]:
                    pending.remove(tp)
            if records:
                yield records


def in_time(record: Record, start: Bound | None, end: Bound | None) -> bool:
    if start is not None and start.time_ms is not None and record.timestamp < start.time_ms:
        return False
    return not (end is not None and end.time_ms is not None and record.timestamp >= end.time_ms)


def merged_by_time(records: Iterable[Record]) -> list[Record]:
    """Records merged across partitions by timestamp; each partition keeps offset order."""
    per_tp: dict[tuple[str, int], list[Record]] = {}
    for record in records:
        per_tp.setdefault((record.topic, record.partition), []).append(record)
    streams = [sorted(part, key=lambda r: r.offset) for part in per_tp.values()]
    return list(heapq.merge(*streams, key=lambda r: r.timestamp))


def rebuild_records(records: Iterable[Record], settings: Settings) -> dict[bytes, TaskState]:
    """Fold event and routed-request records into fresh state with the reducer's fold."""
    states: dict[bytes, TaskState] = {}
    limit = settings.reducer.history_limit
    for record in merged_by_time(records):
        try:
            fold_record(states, record, settings, limit)
        except InvalidMessage:
            continue  # the live reducer dead-letters these; they never change state
    return states


def fold_record(
    states: dict[bytes, TaskState], record: Record, settings: Settings, limit: int
) -> None:
    raw = record.value or b""
    if record.topic == settings.topic.events:
        event = decode_event(raw)
        key = state_key(event["key"])
        states[key], _ = fold_event(states.get(key), event, limit)
    elif record.topic in (settings.topic.kubernetes, settings.topic.celery):
        request = decode_request(raw)
        key = state_key(request["key"])
        states[key], _ = attach_request(states.get(key), request, limit)


async def collect(batches: AsyncIterator[list[Record]]) -> list[Record]:
    records: list[Record] = []
    async for batch in batches:
        records.extend(batch)
    return records
