"""Tasks queued without a launch are re-driven once to their executor topic, then failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.messages import State, TaskKey, encode, make_event, make_request, utc_now
from tests.fixtures.kafka import read_all
from tests.fixtures.reducer import ReducerProcess, event_record, publish

pytestmark = pytest.mark.integration

STUCK = TaskKey("sweep", "stuck", "run1")
LAUNCHED = TaskKey("sweep", "fine", "run1")


def routed(settings: Settings, key: TaskKey) -> bytes:
    request = make_request(key, ["airflow", "tasks", "run"], "default")
    request["routing"] = {
        "target": "celery",
        "topic": settings.topic.celery,
        "routed_at": utc_now(),
    }
    return encode(request)


async def test_stuck_queued_task_is_redriven_once_then_failed(
    topics: Settings,
    reducer_process: Callable[[], ReducerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPELINE_REDUCER_QUEUED_TIMEOUT_S", "2")
    monkeypatch.setenv("PIPELINE_REDUCER_SWEEP_INTERVAL_S", "0.5")
    t = topics.topic
    await publish(
        topics,
        [
            (t.celery, STUCK.partition_key, routed(topics, STUCK)),
            event_record(topics, make_event(STUCK, "router", State.QUEUED)),
            (t.celery, LAUNCHED.partition_key, routed(topics, LAUNCHED)),
            event_record(topics, make_event(LAUNCHED, "router", State.QUEUED)),
            event_record(topics, make_event(LAUNCHED, "launcher", State.LAUNCHED)),
        ],
    )
    reducer = reducer_process()

    def failed(body: dict[str, Any]) -> bool:
        return body["tasks"][0]["state"] == "failed"

    body = await reducer.wait_for("/tasks/sweep/stuck/run1", failed, timeout_s=60)
    state = body["tasks"][0]
    assert state["redriven"] == 1
    assert [(h["state"], h["source"]) for h in state["history"]][-2:] == [
        ("queued", "sweeper"),
        ("failed", "sweeper"),
    ]
    republished = [r for r in await read_all(topics, t.celery) if r.key == STUCK.partition_key]
    assert len(republished) == 2 and republished[0].value == republished[1].value

    fine = (await reducer.get("/tasks/sweep/fine/run1"))["tasks"][0]
    assert fine["state"] == "launched" and "redriven" not in fine
