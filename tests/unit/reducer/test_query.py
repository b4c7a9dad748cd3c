"""Pure parts of the API, sweeper, replay and status: filters, prefixes, decisions, bounds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord

from pipeline.cli.replay import diff
from pipeline.cli.status import query_path
from pipeline.messages import State, TaskKey, make_event, make_request
from pipeline.reducer.api import merge_stats, task_prefix
from pipeline.reducer.fold import TaskState, attach_request, fold_event, state_key
from pipeline.reducer.sweeper import stuck
from pipeline.replay import Bound, in_time, merged_by_time

KEY = TaskKey("etl", "extract", "run:1", 2, try_number=3)


def queued_at(observed_at: str, request: bool = True) -> TaskState:
    if request:
        req = make_request(KEY, ["airflow"], "default")
        req["routing"] = {"target": "kubernetes", "topic": "k", "routed_at": observed_at}
        state, _ = attach_request(None, req, 10)
        return state
    state, _ = fold_event(
        None, make_event(KEY, "router", State.QUEUED, observed_at=observed_at), 10
    )
    return state


def test_task_prefix_selects_every_try_of_one_task_only() -> None:
    prefix = task_prefix("etl", "extract", "run:1", 2)
    assert state_key(KEY.to_wire()).startswith(prefix)
    other = TaskKey("etl", "extract", "run:1", 21, try_number=1)
    assert not state_key(other.to_wire()).startswith(prefix)


def test_stats_from_replicas_add_up() -> None:
    one = {"tasks": 2, "events_per_s": 1.5, "by_state": {"queued": 2}, "outcomes": {"applied": 4}}
    two = {"tasks": 1, "events_per_s": 0.5, "by_state": {"queued": 1}, "by_executor": {"c": 1}}
    merged = merge_stats([one, two])
    assert merged["tasks"] == 3 and merged["events_per_s"] == 2.0 and merged["replicas"] == 2
    assert merged["by_state"] == {"queued": 3} and merged["outcomes"] == {"applied": 4}


def test_sweeper_redrives_first_then_fails() -> None:
    now = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    fresh = queued_at("2026-01-01T00:09:30Z")
    old = queued_at("2026-01-01T00:00:00Z")
    redriven: TaskState = {**old, "redriven": 1}
    no_request = queued_at("2026-01-01T00:00:00Z", request=False)
    actions = stuck([fresh, old, redriven, no_request], now, timeout_s=60)
    assert [(a.kind, a.state) for a in actions] == [
        ("redrive", old),
        ("fail", redriven),
        ("fail", no_request),
    ]


def test_bound_parses_offsets_and_zoned_times_only() -> None:
    assert Bound.parse("42") == Bound(offset=42)
    assert Bound.parse("2026-01-01T00:00:01Z") == Bound(time_ms=1_767_225_601_000)
    with pytest.raises(ValueError, match="timezone"):
        Bound.parse("2026-01-01T00:00:01")
    with pytest.raises(ValueError, match="neither"):
        Bound.parse("yesterday")


def record(partition: int, offset: int, timestamp: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", partition, offset, timestamp, 0, b"k", b"v", None, 1, 1, ())


def test_merge_by_time_keeps_each_partition_in_offset_order() -> None:
    records = [record(0, 1, 50), record(0, 0, 10), record(1, 0, 20), record(1, 1, 5)]
    merged = [(r.partition, r.offset) for r in merged_by_time(records)]
    assert merged == [(0, 0), (1, 0), (1, 1), (0, 1)]
    assert in_time(record(0, 0, 10), Bound(time_ms=10), Bound(time_ms=11))
    assert not in_time(record(0, 0, 11), Bound(time_ms=10), Bound(time_ms=11))


def test_status_key_maps_to_the_api_path() -> None:
    assert (
        query_path("etl/extract/run:1+a", None, None, None, 5) == "/tasks/etl/extract/run%3A1%2Ba"
    )
    assert query_path(None, "etl", "r1", "failed", 5) == (
        "/tasks?dag_id=etl&run_id=r1&state=failed&limit=5"
    )
    assert query_path("etl/extract", None, None, None, 5) == (
        "/tasks?dag_id=etl&task_id=extract&limit=5"
    )


def test_diff_names_the_fields_that_differ() -> None:
    a = queued_at("2026-01-01T00:00:00Z")
    b: TaskState = {**a, "state": "running"}
    result = diff([dict(a)], [dict(b)])
    assert result["different"] == {"etl.extract[2] @ run:1 #3": ["state"]}
    assert result["same"] == 0
