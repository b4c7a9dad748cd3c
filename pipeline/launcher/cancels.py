"""Which tries were cancelled: the launcher's memory that a cancelled request is never launched.

Filled from the control topic itself, read from its start when the launcher starts and then
followed, so it survives restarts and rebalances without a store of its own: a request that
arrives (or is re-delivered) after its cancel was published finds the cancel here. A cancel
that reaches the launcher in its own request stream (the router forwards each one there, in
order with the task's requests) is added at once as well. The follower also ends, at once, a
pod this launcher counts in flight, so a cancel never waits behind requests while the
launcher is paused at `parallelism`. Bounded: the oldest cancels are
forgotten past `remember`; a cancel the launcher handled is also written to the launch ledger
(`cancelled`), which outlives this book.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.messages import CancelInfo, InvalidMessage, TaskKey, cancel_info, decode_control

log = logging.getLogger(__name__)


class CancelBook:
    def __init__(self, remember: int = 100_000) -> None:
        self._cancels: OrderedDict[TaskKey, CancelInfo] = OrderedDict()
        self._remember = remember

    def add(self, key: TaskKey, cancel: CancelInfo) -> None:
        self._cancels.setdefault(key, cancel)
        while len(self._cancels) > self._remember:
            self._cancels.popitem(last=False)

    def get(self, key: TaskKey) -> CancelInfo | None:
        return self._cancels.get(key)

    def __len__(self) -> int:
        return len(self._cancels)

    def learn(self, raw: bytes | None) -> TaskKey | None:
        """Add one control record; its key, or None for a record that is not a valid cancel."""
        try:
            control = decode_control(raw or b"")
        except InvalidMessage:
            return None
        key = TaskKey.from_wire(control["key"])
        self.add(key, cancel_info(control))
        return key


async def read_to_end(consumer: AIOKafkaConsumer, topic: str, book: CancelBook) -> None:
    """Assign every partition of `topic` from its start and read up to the fetch high-water
    (not `end_offsets`, which some brokers understate)."""
    await consumer.topics()
    known = consumer.partitions_for_topic(topic)
    if not known:
        raise RuntimeError(
            f"topic {topic} does not exist (create it with `pipeline topics create`)"
        )
    partitions = [TopicPartition(topic, p) for p in sorted(known)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    while True:
        batch = await consumer.getmany(timeout_ms=200, max_records=5000)
        for records in batch.values():
            for record in records:
                book.learn(record.value)
        behind = []
        for tp in partitions:
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                behind.append(tp)
        if not behind:
            log.info("read %d cancels from %s", len(book), topic)
            return


async def follow(
    consumer: AIOKafkaConsumer, book: CancelBook, on_cancel: Callable[[TaskKey], None]
) -> None:
    """Forever: add each new cancel, and tell `on_cancel` its key."""
    while True:
        batch = await consumer.getmany(timeout_ms=500, max_records=2000)
        for records in batch.values():
            for record in records:
                if (key := book.learn(record.value)) is not None:
                    on_cancel(key)
