"""`pipeline replay`: exact time and offset ranges, merged order, rebuild, re-publish."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from pipeline.config import Settings
from pipeline.kafka import make_producer, started, topic_partitions
from pipeline.messages import State, TaskKey, encode, make_event
from tests.fixtures.kafka import read_all
from tests.fixtures.reducer import run_cli

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
COUNT = 40


async def cli(*args: str) -> tuple[int, str]:
    code, out, err = await run_cli(*args)
    assert code == 0, err
    return code, out


async def publish_timed(settings: Settings) -> None:
    """COUNT events, one second apart, spread over the partitions by task key."""
    producer = make_producer(settings.kafka, "test")
    async with started(producer, settings.kafka):
        futures = []
        for i in range(COUNT):
            key = TaskKey("replay", f"t{i % 7}", "run1", try_number=1 + i // 7)
            event = make_event(key, "watcher", State.RUNNING, observed_at="2026-01-01T00:00:00Z")
            futures.append(
                await producer.send(
                    settings.topic.events, encode(event), key=key.partition_key,
                    timestamp_ms=T0 + i * 1000,
                )
            )  # fmt: skip
        await asyncio.gather(*futures)


def lines(out: str) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines() if line]


async def test_time_range_returns_exactly_the_events_in_range(topics: Settings) -> None:
    await publish_timed(topics)
    _, out = await cli(
        "replay", "events", "--from", "2026-01-01T00:00:10Z", "--to", "2026-01-01T00:00:25Z",
        "--json", "--merge",
    )  # fmt: skip
    shown = lines(out)
    assert [r["timestamp"] for r in shown] == [T0 + i * 1000 for i in range(10, 25)]

    _, out = await cli("replay", "events", "--from", "1", "--to", "3", "--json")
    everything = await read_all(topics, topics.topic.events)
    expected = sorted((r.partition, r.offset) for r in everything if 1 <= r.offset < 3)
    assert [(r["partition"], r["offset"]) for r in lines(out)] == expected

    _, out = await cli("replay", "events", "--key", "replay/t3", "--json")
    assert {r["value"]["key"]["task_id"] for r in lines(out)} == {"t3"}
    assert len(lines(out)) == len([i for i in range(COUNT) if i % 7 == 3])


async def test_one_partition_can_be_chosen_and_an_empty_range_says_where_partitions_end(
    topics: Settings,
) -> None:
    await publish_timed(topics)
    everything = await read_all(topics, topics.topic.events)
    _, out = await cli("replay", "events", "--partition", "1", "--json")
    assert [(r["partition"], r["offset"]) for r in lines(out)] == sorted(
        (r.partition, r.offset) for r in everything if r.partition == 1
    )

    code, out, err = await run_cli("replay", "events", "--from", "1200", "--to", "1300")
    partitions = await topic_partitions(topics.kafka, topics.topic.events)
    ends = {tp.partition: sum(1 for r in everything if r.partition == tp.partition)
            for tp in partitions}  # fmt: skip
    assert code == 0 and out == ""
    assert "offsets within each partition" in err and len(err.splitlines()) == 1
    assert " ".join(f"{p}:{n}" for p, n in ends.items()) in err

    code, _, err = await run_cli("replay", "events", "--partition", "99")
    assert code == 2 and "has partitions 0 to" in err and "Traceback" not in err


async def test_rebuild_until_and_republish_into_another_topic(topics: Settings) -> None:
    await publish_timed(topics)
    _, out = await cli("replay", "events", "--rebuild", "--until", "2026-01-01T00:00:14Z", "--json")
    assert len(lines(out)) == 14  # one state per (task, try) seen before the cut
    assert {s["state"] for s in lines(out)} == {"running"}

    _, _ = await cli("replay", "events", "--from", "2026-01-01T00:00:30Z", "--into", "requests")
    copied = await read_all(topics, topics.topic.requests)
    assert len(copied) == COUNT - 30
    originals = {
        r.value for r in await read_all(topics, topics.topic.events) if r.timestamp >= T0 + 30_000
    }
    assert {r.value for r in copied} == originals
