"""Bulk delivery: a fetch's records are acked to faust only once the writes they caused are."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from pipeline.config import Settings
from pipeline.reducer.app import faust_app
from pipeline.reducer.transport import BulkConsumer, Records
from pipeline.sandbox.profile import sandbox_kafka

TOPIC = "events"
TP0 = TP(TOPIC, 0)


def records(*offsets: int) -> Records:
    return {
        TP0: [
            ConsumerRecord(TOPIC, 0, offset, 0, 0, b"k", b"v", None, 1, 1, []) for offset in offsets
        ]
    }


class Fold:
    """A fold whose writes the test acknowledges (or fails) by hand."""

    bulk_topics = frozenset({TOPIC})

    def __init__(self) -> None:
        self.folded: list[int] = []
        self.writes: list[asyncio.Future[None]] = []

    async def fold_batch(self, batch: Records) -> Awaitable[None]:
        self.folded += [r.offset for rs in batch.values() for r in rs]
        self.writes.append(asyncio.get_running_loop().create_future())
        return self.writes[-1]


@pytest.fixture
def fold() -> Fold:
    return Fold()


@pytest.fixture
def consumer(fold: Fold) -> BulkConsumer:
    app = faust_app(Settings(kafka=sandbox_kafka("127.0.0.1:1")), bulk=fold)
    assert isinstance(app.consumer, BulkConsumer)
    return app.consumer


async def settled(consumer: BulkConsumer) -> None:
    assert consumer._in_flight is not None
    await asyncio.wait({consumer._in_flight}, timeout=5)


async def test_offsets_are_acked_only_once_the_writes_are(
    consumer: BulkConsumer, fold: Fold
) -> None:
    await consumer._fold_in_bulk(fold, records(0, 1, 2), None)
    assert fold.folded == [0, 1, 2] and not consumer._acked[TP0]
    fold.writes[0].set_result(None)
    await settled(consumer)
    assert consumer._acked[TP0] == [0, 1, 2]


async def test_the_next_fetch_is_folded_while_the_previous_writes_are_in_flight(
    consumer: BulkConsumer, fold: Fold
) -> None:
    await consumer._fold_in_bulk(fold, records(0, 1), None)
    fold.writes[0].set_result(None)
    second = asyncio.ensure_future(consumer._fold_in_bulk(fold, records(2, 3), None))
    await asyncio.wait({second}, timeout=5)
    assert fold.folded == [0, 1, 2, 3]  # folded before its own writes were acknowledged
    assert consumer._acked[TP0] == [0, 1]
    fold.writes[1].set_result(None)
    await settled(consumer)
    assert consumer._acked[TP0] == [0, 1, 2, 3]


async def test_a_failed_write_acks_nothing_and_stops_the_fetch_loop(
    consumer: BulkConsumer, fold: Fold
) -> None:
    await consumer._fold_in_bulk(fold, records(0, 1), None)
    fold.writes[0].set_exception(RuntimeError("broker refused"))
    with pytest.raises(RuntimeError, match="broker refused"):
        await consumer._fold_in_bulk(fold, records(2, 3), None)
    assert not consumer._acked[TP0]


async def test_a_rebalance_before_the_writes_are_acknowledged_acks_nothing(
    consumer: BulkConsumer, fold: Fold
) -> None:
    """Faust reads from the committed offsets after a rebalance, so the batch is read again."""
    await consumer._fold_in_bulk(fold, records(0, 1), None)
    consumer.app.consumer_generation_id += 1
    fold.writes[0].set_result(None)
    await settled(consumer)
    assert not consumer._acked[TP0]


async def test_a_stopped_flow_drops_the_fetch(consumer: BulkConsumer, fold: Fold) -> None:
    consumer.stop_flow()  # a rebalance began; faust seeks back to the committed offsets
    await consumer._fold_in_bulk(fold, records(0, 1), None)
    assert fold.folded == [] and consumer._in_flight is None


async def test_records_below_the_read_offset_are_skipped_and_a_gap_is_acked_with_them(
    consumer: BulkConsumer, fold: Fold
) -> None:
    consumer._read_offset[TP0] = 5
    await consumer._fold_in_bulk(fold, records(4, 5, 6), None)
    assert fold.folded == [5, 6]
    fold.writes[0].set_result(None)
    await consumer._fold_in_bulk(fold, records(9, 10), None)  # 7, 8: compacted or markers
    fold.writes[1].set_result(None)
    await settled(consumer)
    assert consumer._acked[TP0] == [5, 6, 7, 8, 9, 10]
    assert consumer._read_offset[TP0] == 10


async def test_wait_empty_waits_for_the_batch_in_flight(
    consumer: BulkConsumer, fold: Fold, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revoke or a stop hands partitions over only once their states are written."""
    commits: list[list[int]] = []

    async def commit() -> None:
        commits.append(list(consumer._acked[TP0]))

    monkeypatch.setattr(consumer, "commit_and_end_transactions", commit)
    await consumer._fold_in_bulk(fold, records(0, 1), None)
    waiting = asyncio.ensure_future(consumer.wait_empty())
    done, _ = await asyncio.wait({waiting}, timeout=0.2)
    assert not done and not commits
    fold.writes[0].set_result(None)
    await asyncio.wait_for(waiting, 5)
    assert commits == [[0, 1]]
