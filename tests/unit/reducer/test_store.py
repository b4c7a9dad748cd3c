"""The reducer's table storage: states kept as their JSON, each read a fresh decode."""

from __future__ import annotations

import tracemalloc

import orjson

from pipeline.messages import State, TaskKey, make_event, make_request
from pipeline.reducer.fold import TaskState, attach_request, fold_event, state_key
from pipeline.reducer.store import EncodedStates


def finished_state(n: int) -> TaskState:
    """A state as the table keeps one: its request, and a history from queued to success."""
    key = TaskKey("etl", f"task-{n}", "scheduled__2026-12-07T00:00:00+00:00")
    request = make_request(key, ["airflow", "tasks", "run", "etl", f"task-{n}"], "kubernetes")
    state, _ = attach_request(None, request, 10, size=500, keep_bytes=10_000)
    for step in (State.QUEUED, State.LAUNCHED, State.RUNNING, State.SUCCESS):
        state, _ = fold_event(state, make_event(key, "watcher", step, executor="kubernetes"), 10)
    return state


def test_a_state_reads_back_equal_and_each_read_is_its_own_copy() -> None:
    states = EncodedStates()
    state = finished_state(1)
    key = state_key(state["key"])
    states[key] = state
    assert key in states and len(states) == 1 and list(states) == [key]
    read = states[key]
    assert read == state
    read["state"] = "failed"  # a reader changing its copy changes nothing kept
    assert states[key]["state"] == "success"
    del states[key]
    assert key not in states and states.get(key) is None


def test_an_encoded_state_is_kept_as_given() -> None:
    states = EncodedStates()
    state = finished_state(2)
    states.put_encoded(b"k", orjson.dumps(state))
    assert states[b"k"] == state


def test_a_kept_state_costs_about_its_json_not_its_decoded_size() -> None:
    held = [finished_state(n) for n in range(1_000)]
    json_bytes = sum(len(orjson.dumps(s)) for s in held) / len(held)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        states = EncodedStates()
        for state in held:
            states.put_encoded(state_key(state["key"]), orjson.dumps(state))
        per_state = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    finally:
        tracemalloc.stop()
    assert per_state < 1.5 * json_bytes  # the JSON, its key and a dict slot
