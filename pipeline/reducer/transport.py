"""Faust's Kafka transport with the project's consumer fetch wait and bulk delivery.

Fetch wait: faust's aiokafka driver builds its worker consumer with a fixed
`fetch_max_wait_ms=1500` and no setting to change it. Real Kafka answers a fetch as soon as
data is there, so the constant only costs idle time; the sandbox broker holds every fetch
for the full wait, so there every event reached the reducer ~0.75 s late on average (and
1.5 s at worst). The consumer takes `kafka.follower_fetch_max_wait_ms`, as the other
consumers off the tasks' path do: nothing a task waits for comes from the reducer (what it
folds is read by people, the dashboard and Airflow's scheduler loop), while on the sandbox
broker each reader's fetches of the busiest topics cost the broker CPU that every task
pays for.

Bulk delivery: faust hands every fetched record to its streams one at a time (a message
object, a conductor callback, a channel queue, an event, a per-message ack); measured, that
machinery took about 80% of the reducer's CPU, and the fold waited for each batch's
changelog acknowledgements before it read the next. So the records of the topics a
`BatchFold` names skip it: each fetch's records go to `fold_batch` in one call, and the
next fetch is folded while that batch's writes are in flight. Faust still owns everything
else: group membership and assignment, flow control during a rebalance, seeking to the
committed offsets, the table and its recovery (changelog records take faust's own path),
and committing the offsets acknowledged here.

A batch's offsets are acknowledged to faust only once `fold_batch`'s writes are, and in
fetch order, so no commit runs ahead of the state it stands for; a rebalance or a stop
waits for the batch in flight (`wait_empty`) before partitions are handed over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from time import monotonic
from typing import Any, Protocol

import aiokafka
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from pipeline.config import KafkaSettings

Records = Mapping[TP, Sequence[ConsumerRecord[bytes, bytes]]]


class BatchFold(Protocol):
    """Where the consumer delivers the records of `bulk_topics`, one fetch at a time."""

    bulk_topics: frozenset[str]

    async def fold_batch(self, records: Records) -> Awaitable[None]:
        """Fold `records` and start writing what they produced.

        Returns once the writes are sent; the awaitable it returns completes when the broker
        has acknowledged them all (and raises if any failed: the batch is then never acked).
        """
        ...


def transport_for(
    kafka: KafkaSettings, bulk: BatchFold | None, *args: Any
) -> faust_aiokafka.Transport:
    """Faust's aiokafka Transport (built from `args`) whose consumer waits as configured and
    delivers the records of `bulk.bulk_topics` to `bulk.fold_batch` (None: faust's own way)."""
    wait_ms = kafka.follower_fetch_max_wait_ms

    class _Thread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read by the consumer's start() when it builds its Fetcher; nothing else sets it.
            consumer._fetch_max_wait_ms = wait_ms
            return consumer

    class _Consumer(BulkConsumer):
        batch_fold = bulk

        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return _Thread(self, loop=self.loop, beacon=self.beacon)

    class FetchWaitTransport(faust_aiokafka.Transport):
        Consumer = _Consumer

    return FetchWaitTransport(*args)


class BulkConsumer(faust_aiokafka.Consumer):
    """Faust's consumer, taking the records of `batch_fold.bulk_topics` out of each fetch.

    The split is made where faust's fetch loop gets a fetch's records (`_wait_next_records`):
    what is left (changelog records during recovery) goes on through faust unchanged.
    """

    batch_fold: BatchFold | None = None
    _in_flight: asyncio.Future[None] | None = None
    _open_batches: int = 0
    _batches_done: asyncio.Event | None = None

    async def _wait_next_records(
        self,
        timeout: float,  # noqa: ASYNC109 (faust's signature)
    ) -> tuple[Mapping[TP, list[Any]] | None, set[TP] | None]:
        records, active = await super()._wait_next_records(timeout)
        fold = self.batch_fold
        if not records or fold is None:
            return records, active
        ours = {tp: batch for tp, batch in records.items() if tp.topic in fold.bulk_topics}
        if not ours:
            return records, active
        await self._fold_in_bulk(fold, ours, active)
        return {tp: batch for tp, batch in records.items() if tp not in ours}, active

    async def _fold_in_bulk(
        self, fold: BatchFold, fetched: Records, active: set[TP] | None
    ) -> None:
        """Fold one fetch, then hand the previous batch's offsets to faust once it is written.

        Records fetched while a rebalance stopped the flow are dropped, as faust's own
        `getmany` drops them: the flow resumes only after a seek to the committed offsets,
        which reads them again.
        """
        if not self.flow_active or self.should_stop:
            return
        generation = self.app.consumer_generation_id
        batch, spans = self._take(fetched, active)
        if not batch:
            return
        self._open()
        try:
            written = await fold.fold_batch(batch)
            if self._in_flight is not None:
                await self._in_flight  # acks in fetch order; one batch in flight at most
        except BaseException:
            self._close()
            raise
        self._in_flight = asyncio.ensure_future(self._ack_when(written, spans, generation))

    def _take(
        self, fetched: Records, active: set[TP] | None
    ) -> tuple[dict[TP, Sequence[ConsumerRecord[bytes, bytes]]], dict[TP, tuple[int, int]]]:
        """The records to fold, and per partition the offsets they acknowledge (first, last).

        As faust's fetch loop: only active partitions, nothing below the read offset, and a
        gap before the batch (offsets of compacted or control records) is acknowledged
        with it (faust adds it to its gap tracking, which ends the same way).
        """
        batch: dict[TP, Sequence[ConsumerRecord[bytes, bytes]]] = {}
        spans: dict[TP, tuple[int, int]] = {}
        inbound = self.app.monitor.stream_inbound_time
        now = monotonic()
        for tp, records in fetched.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            read = self._read_offset[tp]
            if read is not None and records[0].offset < read:
                records = [r for r in records if r.offset >= read]
                if not records:
                    continue
            first, last = records[0].offset, records[-1].offset
            start = read + 1 if read and first - read > 1 else first
            self._read_offset[tp] = last
            batch[tp], spans[tp] = records, (start, last)
            inbound[tp] = now  # faust's livelock check: this partition's stream is moving
        return batch, spans

    async def _ack_when(
        self, written: Awaitable[None], spans: Mapping[TP, tuple[int, int]], generation: int
    ) -> None:
        """Acknowledge the batch's offsets to faust once its writes are acknowledged; faust's
        commit timer commits them (`broker_commit_interval`).

        Not if a rebalance came between: faust then reads from the committed offsets again.
        """
        try:
            await written
            if self.app.consumer_generation_id != generation:
                return
            with ack_lock:  # faust's own ack bookkeeping, for a whole span at once
                for tp, (start, last) in spans.items():
                    committed = self._committed_offset[tp]
                    index = self._acked_index[tp]
                    low = start if committed is None else max(start, committed)
                    fresh = [o for o in range(low, last + 1) if o not in index]
                    index.update(fresh)
                    self._acked[tp].extend(fresh)
                    self._n_acked += len(fresh)
            notify(self._waiting_for_ack)
        finally:
            self._close()

    def _open(self) -> None:
        if self._batches_done is None:
            self._batches_done = asyncio.Event()
        self._open_batches += 1
        self._batches_done.clear()

    def _close(self) -> None:
        self._open_batches -= 1
        if self._open_batches == 0 and self._batches_done is not None:
            self._batches_done.set()

    async def wait_empty(self) -> None:
        """Faust's wait for unfinished work before a revoke or a stop, including our batches.

        A batch still folding or writing must be written (and its offsets acked) before the
        partitions go to another replica, or that replica could recover a state this one
        then overwrites with an older one.
        """
        if self._batches_done is not None:
            await self._batches_done.wait()
        await super().wait_empty()
