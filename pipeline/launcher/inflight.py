"""Which launched pods have not finished yet: the count `parallelism` limits.

Pods are added when this launcher creates them (or finds them alive on a 409) and when it
starts (the adoption scan: managed pods not in a terminal phase whose try the launch ledger
does not record as ended, nor Pending since before its horizon). They leave when the launch
ledger records their try finished or cancelled. The ledger is read to its end *before* the
startup scan and followed from there, so a pod that finishes after the scan always has its
record ahead of the reader, and none is counted forever.
"""

from __future__ import annotations

from collections import OrderedDict

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.launches import try_digest
from pipeline.messages import TaskKey


class InFlight:
    """Keys of unfinished pods, plus recently finished tries so a late add cannot revive one
    (their digests: the window is what a long-running launcher keeps per finished try)."""

    def __init__(self, remember: int = 100_000) -> None:
        self._keys: set[TaskKey] = set()
        self._finished: OrderedDict[bytes, None] = OrderedDict()
        self._remember = remember

    def add(self, key: TaskKey) -> None:
        if try_digest(key) not in self._finished:
            self._keys.add(key)

    def finish(self, key: TaskKey) -> bool:
        """Forget `key` as in flight; True when it was counted."""
        digest = try_digest(key)
        self._finished[digest] = None
        self._finished.move_to_end(digest)
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)
        if key in self._keys:
            self._keys.discard(key)
            return True
        return False

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


async def position_at_end(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of `topic` and fix the position at its current end.

    (Some brokers report an end a little short of the true one; reading a few old records
    again is harmless, as every reader folds them idempotently.)
    """
    await consumer.topics()
    known = consumer.partitions_for_topic(topic)
    if not known:
        raise RuntimeError(
            f"topic {topic} does not exist (create it with `pipeline topics create`)"
        )
    partitions = [TopicPartition(topic, p) for p in sorted(known)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    return partitions
