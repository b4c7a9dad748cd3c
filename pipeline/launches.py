"""The launch ledger: a compacted topic that remembers, per try, that its effect was begun.

A deterministic pod name makes a re-delivered request harmless only while the pod exists;
once the watcher has deleted a finished pod, the name is free again and a re-delivery (or
a replay) would run the try a second time. The ledger outlives the pod:

- `launching`, written by the launcher and acknowledged *before* it creates the pod;
- `finished`, written by the watcher once the try's terminal event is acknowledged and
  before it deletes the pod (so a pod that is gone always left `finished` behind);
- `cancelled`, written by whoever cancels a try: it is never launched after that.

Records are keyed by the full task key (try included) and written to the partition that the
task's partition key maps to, as task logs are (`tasklogs.full_key`, `tasklogs.partition_for`),
so a task's record sits in the same partition number as its requests. A later record never
weakens an earlier one (`merge`). No I/O but the Kafka edges at the bottom.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Final, NotRequired, TypedDict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline import messages
from pipeline.messages import SCHEMA_VERSION, InvalidMessage, Kind, TaskKey, TaskKeyDict
from pipeline.tasklogs import full_key, send_by_try

log = logging.getLogger(__name__)


class LaunchStatus(StrEnum):
    LAUNCHING = "launching"
    FINISHED = "finished"
    CANCELLED = "cancelled"


_RANK: Final = {LaunchStatus.LAUNCHING: 0, LaunchStatus.FINISHED: 1, LaunchStatus.CANCELLED: 2}


class LaunchRecord(TypedDict):
    """One try's record (schemas/launch-record.schema.json)."""

    schema_version: int
    key: TaskKeyDict
    status: str
    source: str
    at: str
    pod_name: NotRequired[str]
    reason: NotRequired[str]


def make_record(
    key: TaskKey, status: LaunchStatus, source: str, **fields: str | None
) -> LaunchRecord:
    record: LaunchRecord = {
        "schema_version": SCHEMA_VERSION,
        "key": key.to_wire(),
        "status": status.value,
        "source": source,
        "at": messages.utc_now(),
    }
    record.update({k: v for k, v in fields.items() if v is not None})  # type: ignore[typeddict-item]
    return record


def decode_record(raw: bytes | None) -> LaunchRecord | None:
    """A record from the ledger topic, or None for anything else written there."""
    try:
        record: LaunchRecord = messages.decode(Kind.LAUNCH_RECORD, raw)
    except InvalidMessage:
        return None
    return record


def standing(old: LaunchStatus | None, new: LaunchStatus) -> LaunchStatus:
    """The status that stands: a later `launching` never undoes `finished` or `cancelled`."""
    return old if old is not None and _RANK[old] > _RANK[new] else new


class LaunchLedger:
    """What the ledger topic says, per try, as far as it has been read.

    It keeps per try only the standing status under a 16-byte digest of the key (about 100
    bytes a try, from 1.3 kB for whole records). With a retention it forgets what was last
    recorded longer ago than that and an eighth more (the topic's retention too): a whole
    generation of tries at a time, so forgetting costs nothing per record. What it forgot
    can no longer be told, so requests submitted before `horizon` are not launched at all;
    the extra eighth covers a producer's clock running ahead of the launcher's.
    """

    GENERATIONS: Final = 8

    def __init__(self, retention_s: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self._retention_s = retention_s
        self._span_s = retention_s / self.GENERATIONS if retention_s > 0 else None
        self._clock = clock
        self._generations: dict[int, dict[bytes, LaunchStatus]] = {}  # a try in one only

    def apply(self, record: LaunchRecord, at_s: float | None = None) -> LaunchStatus:
        """Fold a record in (written at `at_s`, now if not given); the try's standing status."""
        digest = try_digest(TaskKey.from_wire(record["key"]))
        found, old = self._find(digest)
        kept = standing(old, LaunchStatus(record["status"]))
        generation = self._generation(self._clock() if at_s is None else at_s)
        if found is not None and found >= generation:
            self._generations[found][digest] = kept  # its newest record keeps its place
            return kept
        if found is not None:
            del self._generations[found][digest]
        if generation >= self._oldest_kept():
            self._generations.setdefault(generation, {})[digest] = kept
            self._forget_old()
        return kept

    def status(self, key: TaskKey) -> LaunchStatus | None:
        return self._find(try_digest(key))[1]

    def horizon(self) -> float | None:
        """The epoch second before which a request is too old to tell whether it ran."""
        return self._clock() - self._retention_s if self._retention_s > 0 else None

    def __len__(self) -> int:
        return sum(map(len, self._generations.values()))

    def _find(self, digest: bytes) -> tuple[int | None, LaunchStatus | None]:
        for generation in reversed(self._generations):
            if (status := self._generations[generation].get(digest)) is not None:
                return generation, status
        return None, None

    def _generation(self, at_s: float) -> int:
        return int(at_s // self._span_s) if self._span_s is not None else 0

    def _oldest_kept(self) -> int:
        return self._generation(self._clock()) - self.GENERATIONS - 1

    def _forget_old(self) -> None:
        oldest = self._oldest_kept()
        for generation in [g for g in self._generations if g < oldest]:
            del self._generations[generation]


def try_digest(key: TaskKey) -> bytes:
    """16 bytes that stand for a try in a memory kept per try (a key object costs ~0.5 kB)."""
    return hashlib.blake2b(full_key(key), digest_size=16).digest()


# -- Kafka edges -------------------------------------------------------------------------------


async def write(producer: AIOKafkaProducer, topic: str, records: Iterable[LaunchRecord]) -> None:
    """Write records to their tasks' partitions and wait until all are acknowledged."""
    values = ((TaskKey.from_wire(r["key"]), messages.encode(r)) for r in records)
    await send_by_try(producer, topic, values)


async def caught_up(consumer: AIOKafkaConsumer, highwaters: dict[TopicPartition, int]) -> bool:
    """Whether `consumer` has read every partition up to the given high-water offsets."""
    for tp, end in highwaters.items():
        if await consumer.position(tp) < end:
            return False
    return True
