"""The query API and `pipeline status` show the same state; bad records reach the DLQ."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from pipeline.messages import State, TaskKey, make_event
from tests.fixtures.kafka import read_records
from tests.fixtures.reducer import ReducerProcess, event_record, publish, run_cli

pytestmark = pytest.mark.integration

DONE = TaskKey("api", "extract", "run:1+x")
RETRY = TaskKey("api", "extract", "run:1+x", try_number=2)
OTHER = TaskKey("api", "load", "run2", map_index=3)
PULLING = 'ErrImagePull: pull access denied for "missing/app:1"'


async def publish_events(settings: Settings) -> None:
    events = [
        make_event(DONE, "router", State.QUEUED, executor="celery"),
        make_event(DONE, "celery-monitor", State.RUNNING),
        make_event(DONE, "celery-monitor", State.FAILED, reason="exit 3", exit_code=3),
        make_event(DONE, "celery-monitor", State.SUCCESS),  # illegal: terminal is sticky
        make_event(RETRY, "router", State.QUEUED, executor="celery"),
        make_event(OTHER, "launcher", State.LAUNCHED, executor="kubernetes", pod_name="p-1"),
        make_event(OTHER, "watcher", State.LAUNCHED, reason=PULLING),
    ]
    bad = (settings.topic.events, DONE.partition_key, b"{not json")
    await publish(settings, [*(event_record(settings, e) for e in events), bad])


async def test_api_and_status_cli_show_the_same_state_and_bad_records_are_dead_lettered(
    topics: Settings,
    reducer_process: Callable[[], ReducerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await publish_events(topics)
    reducer = reducer_process()
    monkeypatch.setenv("PIPELINE_REDUCER_API_URL", reducer.url)

    def both_tries(body: dict[str, Any]) -> bool:
        return len(body["tasks"]) == 2 and body["tasks"][0].get("illegal_transitions") == 1

    body = await reducer.wait_for("/tasks/api/extract/run:1+x", both_tries)
    first, second = body["tasks"]
    assert (first["state"], first["exit_code"], first["reason"]) == ("failed", 3, "exit 3")
    assert [h["state"] for h in first["history"]] == ["queued", "running", "failed"]
    assert second["key"]["try_number"] == 2 and second["state"] == "queued"
    assert (await reducer.get("/tasks/api/extract/run:1+x/-1/2"))["tasks"] == [second]

    def told_why_held(body: dict[str, Any]) -> bool:
        return [t["reason"] for t in body["tasks"]] == [PULLING]

    await reducer.wait_for("/tasks/api/load/run2/3/1", told_why_held)
    listed = await reducer.get("/tasks", state="launched")
    assert [(t["key"]["task_id"], t["reason"]) for t in listed["tasks"]] == [("load", PULLING)]
    stats = await reducer.get("/stats")
    assert stats["by_state"] == {"failed": 1, "queued": 1, "launched": 1}
    assert stats["outcomes"]["illegal"] == 1

    code, out, _ = await run_cli("status", "api/extract/run:1+x", "--json")
    assert code == 0 and orjson.loads(out) == body
    code, out, _ = await run_cli("status", "--dag", "api", "--json")
    assert code == 0 and {t["key"]["task_id"] for t in orjson.loads(out)["tasks"]} == {
        "extract",
        "load",
    }
    code, out, _ = await run_cli("status", "api/load", "--json")
    assert code == 0 and [t["key"]["task_id"] for t in orjson.loads(out)["tasks"]] == ["load"]
    code, out, _ = await run_cli("status", "api/extract/run:1+x")
    assert code == 0 and "failed" in out and "history of api.extract @ run:1+x #1" in out

    code, out, _ = await run_cli("replay", "events", "--diff", "--json")
    assert code == 0, out
    assert orjson.loads(out) == {"only_rebuilt": [], "only_live": [], "different": {}, "same": 3}

    [letter] = await read_records(topics, topics.topic.dlq, 1)
    dead = orjson.loads(letter.value or b"")
    assert base64.b64decode(dead["original"]) == b"{not json"
    assert (dead["error"]["code"], dead["stage"]) == ("not_json", "reducer")

    metrics = await reducer.text("/metrics")
    assert 'pipeline_reducer_events_total{outcome="illegal"} 1.0' in metrics

    reducer.kill()
    code, _, err = await run_cli("status")
    assert code == 2 and err.count("\n") == 1 and "cannot reach the reducer API" in err
