"""Task output that outlives its pod or worker: the TaskLog record, its bound and its masking.

A finished try's output is kept as one TaskLog on the compacted logs topic, keyed by the full
task key (so compaction keeps the newest capture per try) and written to the partition of the
task's partition key (so it sits with the task's events and state, and the reducer replica that
owns the task indexes it). Only the newest `logs.max_bytes` bytes are kept; the text is stored
as printed (undecodable bytes replaced), and values of secret-looking environment variables
are masked before anything is stored or served. A log line is data: nothing parses it.

While a Celery command runs, the worker keeps its growing capture under `capture_key` in the
result backend's Redis, which is where a live `logs --follow` of a Celery task reads it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from typing import Final, TypedDict

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from pipeline.messages import (
    SCHEMA_VERSION,
    Kind,
    TaskKey,
    TaskKeyDict,
    decode,
    encode,
    utc_now,
)

MASK: Final = "***"
SECRET_NAME: Final = re.compile(
    r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|API_?KEY|PRIVATE|AUTH)", re.IGNORECASE
)
"""Environment variable names whose values never appear in a stored or served log."""
_MIN_SECRET_LEN: Final = 4  # masking a 1-3 character value would shred ordinary text
_PARTITIONER: Final = DefaultPartitioner()


class TaskLog(TypedDict):
    """schemas/task-log.schema.json"""

    schema_version: int
    key: TaskKeyDict
    executor: str
    source: str
    text: str
    truncated: int
    captured_at: str


def full_key(key: TaskKey) -> bytes:
    """The logs topic's record key: the full task key, try included (one record per try)."""
    return encode(list(key.to_wire().values()))


def partition_for(key: TaskKey, partitions: Iterable[int]) -> int:
    """The partition the task's events go to (Kafka's default partitioner on the
    partition key), so a log lies with its task's state."""
    ordered = sorted(partitions)
    partition: int = _PARTITIONER(key.partition_key, ordered, ordered)
    return partition


def secrets_of(env: Mapping[str, str]) -> list[str]:
    """The values to mask: those of variables whose names say they are secret."""
    return sorted(
        {v for name, v in env.items() if SECRET_NAME.search(name) and len(v) >= _MIN_SECRET_LEN},
        key=len,
        reverse=True,
    )


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def bounded(data: bytes, max_bytes: int) -> tuple[bytes, int]:
    """The newest `max_bytes` bytes, from a line start when one is near; and how many were
    dropped."""
    if len(data) <= max_bytes:
        return data, 0
    kept = data[-max_bytes:]
    newline = kept.find(b"\n", 0, 1024)
    if newline >= 0:
        kept = kept[newline + 1 :]
    return kept, len(data) - len(kept)


def make_task_log(
    key: TaskKey,
    executor: str,
    source: str,
    data: bytes,
    *,
    max_bytes: int,
    secrets: Iterable[str] = (),
) -> TaskLog:
    kept, dropped = bounded(data, max_bytes)
    return {
        "schema_version": SCHEMA_VERSION,
        "key": key.to_wire(),
        "executor": executor,
        "source": source,
        "text": mask(kept.decode(errors="replace"), secrets),
        "truncated": dropped,
        "captured_at": utc_now(),
    }


async def publish(producer: AIOKafkaProducer, topic: str, records: Iterable[TaskLog]) -> None:
    """Send TaskLogs to their tasks' partitions and wait until all are acknowledged."""
    await send_by_try(producer, topic, ((TaskKey.from_wire(r["key"]), encode(r)) for r in records))


async def send_by_try(
    producer: AIOKafkaProducer, topic: str, values: Iterable[tuple[TaskKey, bytes]]
) -> None:
    """Send each value keyed by its try's full key to its task's partition, then wait for
    every acknowledgement at once (one produce round trip for a whole batch)."""
    partitions = await producer.partitions_for(topic)
    sent = []
    for key, value in values:
        partition = partition_for(key, partitions)
        sent.append(await producer.send(topic, value, key=full_key(key), partition=partition))
    if sent:
        await asyncio.gather(*sent)


def decode_task_log(raw: bytes | None, *, max_bytes: int | None = None) -> TaskLog:
    record: TaskLog = decode(Kind.TASK_LOG, raw, max_bytes=max_bytes)
    return record


def tail(text: str, lines: int | None) -> str:
    """The last `lines` lines of `text` (all of it for None)."""
    if lines is None:
        return text
    if lines <= 0:
        return ""
    return "".join(text.splitlines(keepends=True)[-lines:])


def capture_key(task_id: str) -> str:
    """Where a running Celery command's capture lives in the result backend's Redis."""
    return f"pipeline-celery-log-{task_id}"
