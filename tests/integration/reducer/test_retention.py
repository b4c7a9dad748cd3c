"""Finished tries are forgotten past the retention horizon, and stay forgotten."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from pipeline.config import Settings
from pipeline.messages import State, TaskKey, make_event
from pipeline.reducer.fold import state_key
from tests.fixtures.kafka import read_all
from tests.fixtures.reducer import ReducerProcess, event_record, publish, run_cli

pytestmark = pytest.mark.integration

RETENTION_S = 6
FINISHED = TaskKey("retention", "finished", "run1")
RUNNING = TaskKey("retention", "running", "run1")
LATER = TaskKey("retention", "later", "run1")


def held(body: dict[str, Any]) -> dict[str, str]:
    return {s["key"]["task_id"]: s["state"] for s in body["tasks"]}


async def test_a_finished_try_is_forgotten_and_a_late_event_does_not_bring_it_back(
    topics: Settings,
    reducer_process: Callable[[], ReducerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPELINE_REDUCER_RETENTION_S", str(RETENTION_S))
    monkeypatch.setenv("PIPELINE_REDUCER_SWEEP_INTERVAL_S", "0.5")
    reducer = reducer_process()
    await reducer.wait_for("/tasks", lambda body: body["tasks"] == [])
    steps = (State.QUEUED, State.LAUNCHED, State.RUNNING)
    success = make_event(FINISHED, "watcher", State.SUCCESS)
    events = [make_event(FINISHED, "watcher", s) for s in steps] + [success]
    events += [make_event(RUNNING, "watcher", s) for s in steps]
    await publish(topics, [event_record(topics, e) for e in events])
    both = {"finished": "success", "running": "running"}
    await reducer.wait_for("/tasks", lambda body: held(body) == both)

    await reducer.wait_for("/tasks", lambda body: held(body) == {"running": "running"})
    changelog = await read_all(topics, topics.topic.state)
    last = [r.value for r in changelog if r.key == state_key(FINISHED.to_wire())][-1]
    assert last is None, "the forgotten try's last changelog record is not a tombstone"

    late = [success, make_event(LATER, "router", State.QUEUED)]
    await publish(topics, [event_record(topics, e) for e in late])
    await reducer.wait_for("/tasks", lambda body: "later" in held(body))
    await reducer.wait_for("/stats", lambda body: body["outcomes"].get("expired") == 1)
    assert held(await reducer.get("/tasks")) == {"running": "running", "later": "queued"}
    monkeypatch.setenv("PIPELINE_REDUCER_API_URL", reducer.url)
    code, out, _ = await run_cli("replay", "events", "--diff", "--json")
    assert code == 0 and orjson.loads(out)["only_rebuilt"] == [], "the forgotten try is a diff"

    url = f"{reducer.url}/tasks/retention/finished/run1"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 404 and "RETENTION_S" in await response.text()

    reducer.kill()
    recovered = reducer_process()
    await recovered.wait_for("/tasks", lambda body: "running" in held(body))
    assert "finished" not in held(await recovered.get("/tasks"))
