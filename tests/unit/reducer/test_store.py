"""The reducer's table storage: states kept as their JSON (packed once finished), each read
a fresh decode."""

from __future__ import annotations

import tracemalloc

import orjson

from pipeline.messages import State, TaskKey, make_event, make_request
from pipeline.reducer.fold import TaskState, attach_request, fold_event, state_key
from pipeline.reducer.packing import PACKED
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


def test_an_encoded_state_reads_back_as_given_live_or_finished() -> None:
    states = EncodedStates()
    state = finished_state(2)
    states.put_encoded(b"live", orjson.dumps(state), finished=False)
    states.put_encoded(b"done", orjson.dumps(state), finished=True)
    assert states[b"live"] == state and states[b"done"] == state


def test_a_state_set_whole_is_packed_when_it_is_terminal() -> None:
    states = EncodedStates()
    live, done = finished_state(3), finished_state(4)
    live["state"] = "running"
    states[b"live"], states[b"done"] = live, done
    held = dict(states._raw)
    assert held[b"live"] == orjson.dumps(live)
    assert held[b"done"].startswith(PACKED) and len(held[b"done"]) < len(orjson.dumps(done)) / 3
    assert states[b"live"] == live and states[b"done"] == done


def held_bytes_per_state(finished: bool, n: int = 1_000) -> tuple[float, float]:
    """Memory per state kept (traced), and its JSON's size."""
    held = [finished_state(i) for i in range(n)]
    encoded = [(state_key(s["key"]), orjson.dumps(s)) for s in held]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        states = EncodedStates()
        for key, value in encoded:
            states.put_encoded(key, value, finished=finished)
        per_state = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    return per_state, sum(len(v) for _, v in encoded) / n


def test_a_live_state_costs_about_its_json_not_its_decoded_size() -> None:
    per_state, json_bytes = held_bytes_per_state(finished=False)
    assert per_state < 1.5 * json_bytes  # the JSON, its key and a dict slot


def test_a_finished_state_costs_a_fraction_of_its_json() -> None:
    per_state, json_bytes = held_bytes_per_state(finished=True)
    assert per_state < 0.5 * json_bytes  # ~250 packed bytes, its key and a dict slot
