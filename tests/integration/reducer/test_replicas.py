"""Two reducer replicas split the partitions, answer for each other, and take over on death."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.messages import State, TaskKey, make_event
from tests.fixtures.reducer import ReducerProcess, event_record, publish, rebuilt

pytestmark = pytest.mark.integration

TASKS = 120


async def publish_events(settings: Settings) -> None:
    events = [
        make_event(TaskKey("replicas", f"t{i}", "run1"), "watcher", state)
        for i in range(TASKS)
        for state in (State.QUEUED, State.RUNNING, State.SUCCESS)
    ]
    await publish(settings, [event_record(settings, e) for e in events])


async def test_replicas_route_queries_to_the_owner_and_take_over_a_dead_one(
    topics: Settings, reducer_process: Callable[[], ReducerProcess]
) -> None:
    await publish_events(topics)
    expected = await rebuilt(topics)
    a = reducer_process()
    # `a` folds every task live before `b` joins, so the split below also shows that `a`
    # lets go of the states it wrote to the partitions it hands over.
    await a.wait_for("/stats", lambda body: body["tasks"] == TASKS, scope="local")
    b = reducer_process()
    await b.wait_for("/stats", lambda body: body["tasks"] > 0, scope="local")

    def split(body: dict[str, Any]) -> bool:
        return body["tasks"] == TASKS and body["replicas"] == 2

    await a.wait_for("/stats", split)
    local_a = (await a.get("/stats", scope="local"))["tasks"]
    local_b = (await b.get("/stats", scope="local"))["tasks"]
    assert local_a > 0 and local_b > 0 and local_a + local_b == TASKS

    # Every task is answered by either replica: the other forwards to the owner.
    for i in range(0, TASKS, 7):
        for replica in (a, b):
            body = await replica.get(f"/tasks/replicas/t{i}/run1")
            assert body["tasks"] == [expected[f"replicas/t{i}/run1/-1/1"]]
    assert await b.all_states() == expected  # the list fans out to both replicas

    b.kill()
    await a.wait_for("/stats", lambda body: body["tasks"] == TASKS, scope="local")
    assert await a.all_states() == expected
