"""Which launched pods have not finished yet: the count `parallelism` limits.

Pods are added when this launcher creates them (or finds them alive on a 409) and when it
starts (the adoption scan: managed pods not in a terminal phase whose try the launch ledger
does not record as ended, nor Pending since before its horizon). They leave when a terminal
TaskEvent for their key appears on the events topic. The events consumer is positioned at the
topic's end *before* the startup scan, so a pod that finishes after the scan always has its
event ahead of the consumer, and none is counted forever.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.launches import try_digest
from pipeline.messages import TERMINAL_STATES, InvalidMessage, TaskKey, decode_event

log = logging.getLogger(__name__)


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


_TERMINAL_NAMES: Final = tuple(state.value.encode() for state in TERMINAL_STATES)


def finished_key(raw: bytes | None) -> TaskKey | None:
    """The key of a terminal event of a Kubernetes (or executor-less) task, else None.

    An event that does not even contain a terminal state's name is not parsed (most events
    are `queued`, `launched` or `running`)."""
    if raw is None or not any(name in raw for name in _TERMINAL_NAMES):
        return None
    try:
        event = decode_event(raw)
    except InvalidMessage:  # the reducer dead-letters it; here it only finishes nothing
        return None
    if event["state"] not in TERMINAL_STATES or event.get("executor") == "celery":
        return None
    return TaskKey.from_wire(event["key"])


async def position_at_end(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of `topic` and fix the position at its current end.

    (Some brokers report an end a little short of the true one; reading a few old events
    only finishes keys that are already finished, so it is harmless.)
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


async def follow_finished(
    consumer: AIOKafkaConsumer, in_flight: InFlight, on_finish: Callable[[], None]
) -> None:
    """Forever: drop finished tasks from `in_flight`, calling `on_finish` when room appears."""
    while True:
        batch = await consumer.getmany(timeout_ms=500, max_records=2000)
        freed = False
        for records in batch.values():
            for record in records:
                key = finished_key(record.value)
                if key is not None and in_flight.finish(key):
                    freed = True
        if freed:
            on_finish()
