"""The dashboard's view of the dead-letter topic: a live tail, counts by reason, redrive.

The reducer does not read the DLQ, so the dashboard tails it itself (no consumer group, from
the beginning): it counts every letter by reason and keeps the newest `kept` to show. A
redrive publishes exactly what `pipeline dlq redrive` would (`pipeline.dlq`), and remembers
which letters it sent back so the page can say so.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Iterable

from pipeline import dlq
from pipeline.config import Settings
from pipeline.dlq import RedriveError, StoredLetter
from pipeline.kafka import BrokerUnreachable, make_consumer, started, topic_partitions

log = logging.getLogger(__name__)

Place = tuple[int, int]


class LetterTail:
    """The newest dead letters and a count of all of them, fed by `run`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kept: deque[StoredLetter] = deque(maxlen=settings.ui.dead_letters_kept)
        self.by_reason: Counter[str] = Counter()
        self.redriven: set[Place] = set()
        self.next_offset: dict[int, int] = {}
        self.connected = False

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def add(self, stored: StoredLetter) -> None:
        self.kept.append(stored)
        self.by_reason[stored.reason] += 1

    def newest(
        self, reason: str | None, offset: int, limit: int
    ) -> tuple[list[StoredLetter], bool]:
        """A page of the kept letters, newest first, optionally of one reason."""
        matching = [s for s in reversed(self.kept) if reason in (None, s.reason)]
        return matching[offset : offset + limit], len(matching) > offset + limit

    def find(self, places: Iterable[Place]) -> list[StoredLetter]:
        wanted = set(places)
        found = [s for s in self.kept if (s.partition, s.offset) in wanted]
        if len(found) != len(wanted):
            raise RedriveError("a selected dead letter is no longer held; reload the page")
        return found

    async def redrive(self, places: Iterable[Place]) -> int:
        """Re-publish the selected letters to their source topics; returns how many."""
        letters = self.find(places)
        out = dlq.redrive_messages(
            letters,
            validate_topic=self.settings.topic.requests,
            max_bytes=self.settings.kafka.max_message_bytes,
        )
        await dlq.publish(self.settings.kafka, out)
        self.redriven.update((s.partition, s.offset) for s in letters)
        return len(out)

    async def run(self, retry_s: float = 2.0) -> None:
        """Tail the DLQ forever; a broker that goes away is retried, never fatal."""
        while True:
            try:
                await self._tail()
            except (BrokerUnreachable, OSError) as exc:
                log.warning("dead-letter tail: %s; retrying", exc)
            except Exception:
                log.exception("dead-letter tail failed; retrying")
            self.connected = False
            await asyncio.sleep(retry_s)

    async def _tail(self) -> None:
        kafka, topic = self.settings.kafka, self.settings.topic.dlq
        partitions = await topic_partitions(kafka, topic)
        if not partitions:
            log.warning("dead-letter topic %s does not exist yet; retrying", topic)
            return
        # off the tasks' path: a page shows a letter up to a follower's wait later
        consumer = make_consumer(kafka, group_id=None, client_id="ui-dlq", follower=True)
        async with started(consumer, kafka):
            consumer.assign(partitions)
            for tp in partitions:
                consumer.seek(tp, self.next_offset.get(tp.partition, 0))
            self.connected = True
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self.next_offset[record.partition] = record.offset + 1
                        stored = dlq.stored_letter(record.partition, record.offset, record.value)
                        if stored is not None:
                            self.add(stored)
