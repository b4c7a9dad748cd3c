"""Where a watch's position survives a restart: a compacted topic, one key per watch.

A topic of its own rather than the events topic: events are keyed by task and spread over
partitions, so the last resourceVersion would have to be found by reading all of them;
here the key is (API server, namespace, selector), it always lands on one partition, and
compaction keeps one record per watch. A checkpoint is written only after every event up
to its resourceVersion was acknowledged (at-least-once), and it carries the pods whose
end was not reported yet, so a relist after the version expired can still tell which of
them vanished while the watcher was down, and the ended pods whose finishing (log kept,
launch record written) was not done, so a restart does it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from pipeline.config import KafkaSettings
from pipeline.kafka import make_consumer, started
from pipeline.messages import utc_now
from pipeline.watcher.translate import PodObservation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    resource_version: str
    open_pods: list[PodObservation]

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "resource_version": self.resource_version,
                "open_pods": [pod.to_wire() for pod in self.open_pods],
                "written_at": utc_now(),
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Checkpoint:
        data = orjson.loads(raw)
        pods = [PodObservation.from_wire(pod) for pod in data["open_pods"]]
        return cls(str(data["resource_version"]), pods)

    @classmethod
    def read(cls, raw: bytes | None) -> Checkpoint | None:
        """The checkpoint in `raw`, or None for anything else written to the topic: a list
        from scratch is always safe, a crash here would repeat on every restart."""
        if raw is None:
            return None
        try:
            return cls.decode(raw)
        except Exception as exc:
            log.warning("unreadable checkpoint ignored; starting from a list: %s", exc)
            return None


def scope_key(server: str, namespace: str, selector: str) -> bytes:
    """One key per watch: a checkpoint never applies to another cluster or selection."""
    return orjson.dumps([server, namespace, selector])


class CheckpointStore:
    def __init__(self, kafka: KafkaSettings, topic: str, producer: AIOKafkaProducer) -> None:
        self._kafka = kafka
        self._topic = topic
        self._producer = producer

    async def _partition(self, key: bytes) -> int:
        partitions: list[int] = sorted(await self._producer.partitions_for(self._topic))
        index: int = (murmur2(key) & 0x7FFFFFFF) % len(partitions)
        chosen: int = partitions[index]
        return chosen

    async def save(self, key: bytes, checkpoint: Checkpoint) -> None:
        """Write and wait for the broker's acknowledgement."""
        partition = await self._partition(key)
        sent = await self._producer.send(
            self._topic, checkpoint.encode(), key=key, partition=partition
        )
        await sent

    async def load(self, key: bytes, timeout_s: float = 30.0) -> Checkpoint | None:
        """The last checkpoint written for `key`, or None (also for an unreadable one)."""
        tp = TopicPartition(self._topic, await self._partition(key))
        consumer = make_consumer(self._kafka, group_id=None, client_id="watcher-checkpoint")
        last: bytes | None = None
        async with started(consumer, self._kafka), asyncio.timeout(timeout_s):
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=200)
                for record in batch.get(tp, []):
                    if record.key == key:
                        last = record.value
                highwater = consumer.highwater(tp)
                if not batch and highwater is not None and await consumer.position(tp) >= highwater:
                    break
        return Checkpoint.read(last)
