"""A SIGKILLed reducer recovers every key from the changelog, equal to a full rebuild."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.config import Settings
from pipeline.kafka import make_producer, started
from pipeline.messages import State, TaskKey, encode, make_event
from pipeline.reducer.fold import state_key
from tests.fixtures.kafka import read_all
from tests.fixtures.reducer import (
    ReducerProcess,
    event_record,
    publish,
    rebuilt,
    wait_committed,
)

pytestmark = pytest.mark.integration

TASKS = 300
LIFECYCLE = [State.QUEUED, State.LAUNCHED, State.RUNNING]


def history(i: int) -> list[bytes]:
    """One task's events: a full try 1, a try 2 for some, a late duplicate for others."""
    key = TaskKey("recovery", f"t{i}", "run1")
    ending = State.SUCCESS if i % 3 else State.FAILED
    events = [make_event(key, "watcher", s, discriminator=str(i)) for s in [*LIFECYCLE, ending]]
    if i % 4 == 0:
        retry = TaskKey("recovery", f"t{i}", "run1", try_number=2)
        events += [make_event(retry, "launcher", State.QUEUED), events[0]]
    return [encode(e) for e in events]


async def publish_histories(settings: Settings) -> int:
    """Every task's history, interleaved step by step across the tasks."""
    messages: list[tuple[str, bytes | None, bytes]] = [
        (settings.topic.events, TaskKey("recovery", f"t{i}", "run1").partition_key, value)
        for step in range(6)
        for i in range(TASKS)
        for value in history(i)[step : step + 1]
    ]
    await publish(settings, messages)
    return len(messages)


async def test_sigkill_then_restart_recovers_every_key_from_the_changelog(
    topics: Settings, reducer_process: Callable[[], ReducerProcess]
) -> None:
    published = await publish_histories(topics)
    expected = await rebuilt(topics)
    assert len(expected) == TASKS + TASKS // 4 and published > 1000

    first = reducer_process()
    await first.wait_for("/tasks", lambda body: len(body["tasks"]) == len(expected), limit=10_000)
    assert await first.all_states() == expected
    # Everything consumed is committed: a restart cannot re-fold events, so whatever
    # state it has came from the changelog alone.
    await wait_committed(topics, f"reducer-{topics.topic.state}")
    first.kill()
    changelog = await read_all(topics, topics.topic.state)
    partitions = {r.partition for r in changelog}
    # A batch writes each touched key once, so the changelog holds at least one record per
    # key (~100 per partition: several produce batches, so the last-batch case is covered).
    assert len(changelog) >= len(expected) and len(partitions) == topics.topic.partitions

    second = reducer_process()
    await second.wait_for("/tasks", lambda body: len(body["tasks"]) == len(expected), limit=10_000)
    recovered = await second.all_states()
    stale = [k for k in expected if recovered.get(k) != expected[k]]
    assert not stale, f"{len(stale)} keys not recovered, e.g. {stale[:3]}"
    # Recovery read them in changelog order; once it is done they list newest first.
    await second.wait_for("/readyz", lambda body: body["ready"])
    listed = (await second.get("/tasks", limit=10_000))["tasks"]
    arrivals = [s.get("first_seen") or s["updated_at"] for s in listed]
    assert len(arrivals) == len(expected) and arrivals == sorted(arrivals, reverse=True)


async def test_recovery_refuses_records_that_are_not_a_state_of_their_key(
    topics: Settings, reducer_process: Callable[[], ReducerProcess]
) -> None:
    await publish_histories(topics)
    expected = await rebuilt(topics)
    first = reducer_process()
    await first.wait_for("/tasks", lambda body: len(body["tasks"]) == len(expected), limit=10_000)
    await wait_committed(topics, f"reducer-{topics.topic.state}")
    first.kill()

    retry = TaskKey("recovery", "t0", "run1", try_number=2)  # still queued
    changelog = await read_all(topics, topics.topic.state)
    [kept] = [r for r in changelog if r.key == state_key(retry.to_wire())][-1:]
    other = next(r for r in changelog if r.key != kept.key)
    async with started(make_producer(topics.kafka, "test"), topics.kafka) as producer:
        for forged in (b"{not json", b'{"state": "success"}', other.value):
            await producer.send_and_wait(
                topics.topic.state, forged, key=kept.key, partition=kept.partition
            )

    second = reducer_process()
    await second.wait_for("/tasks", lambda body: len(body["tasks"]) == len(expected), limit=10_000)
    assert await second.all_states() == expected, "a refused record changed a state"
    metrics = await second.text("/metrics")
    assert "pipeline_reducer_changelog_rejected_total 3.0" in metrics

    await publish(topics, [event_record(topics, make_event(retry, "launcher", State.LAUNCHED))])
    body = await second.wait_for(
        "/tasks/recovery/t0/run1/-1/2", lambda body: body["tasks"][0]["state"] == "launched"
    )
    assert [s["state"] for s in body["tasks"][0]["history"]] == ["queued", "launched"]
