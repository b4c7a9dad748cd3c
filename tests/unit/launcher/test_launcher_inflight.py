"""Which events free a launcher slot (terminal ones of Kubernetes tasks, parsed only then),
and how the count of unfinished pods treats late and repeated news."""

from __future__ import annotations

import pytest

from pipeline.launcher.inflight import InFlight, finished_key
from pipeline.messages import TERMINAL_STATES, State, TaskKey, encode, make_event

KEY = TaskKey("dag", "task", "run", -1, 1)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_a_terminal_event_of_a_kubernetes_task_frees_its_key(state: State) -> None:
    event = make_event(KEY, "watcher", state, executor="kubernetes", reason="done")
    assert finished_key(encode(event)) == KEY


@pytest.mark.parametrize("state", [State.QUEUED, State.LAUNCHED, State.RUNNING])
def test_an_unfinished_state_frees_nothing(state: State) -> None:
    assert finished_key(encode(make_event(KEY, "watcher", state, executor="kubernetes"))) is None


def test_a_reason_that_names_a_terminal_state_does_not_make_an_event_terminal() -> None:
    event = make_event(KEY, "watcher", State.LAUNCHED, reason="last try failed")
    assert finished_key(encode(event)) is None


def test_a_celery_tasks_end_holds_no_launcher_slot() -> None:
    event = make_event(KEY, "celery-monitor", State.SUCCESS, executor="celery")
    assert finished_key(encode(event)) is None


def test_a_finished_pod_leaves_the_count_once() -> None:
    in_flight = InFlight()
    in_flight.add(KEY)
    assert (len(in_flight), KEY in in_flight) == (1, True)
    assert in_flight.finish(KEY) is True
    assert in_flight.finish(KEY) is False  # a second terminal event frees no second slot
    assert (len(in_flight), KEY in in_flight) == (0, False)


def test_an_add_after_the_finish_does_not_revive_the_try() -> None:
    in_flight = InFlight()
    in_flight.finish(KEY)  # the pod ended before its create call returned
    in_flight.add(KEY)
    assert len(in_flight) == 0
    in_flight.add(TaskKey("dag", "task", "run", -1, 2))  # the next try is another pod
    assert len(in_flight) == 1


def test_only_the_newest_finished_tries_are_remembered() -> None:
    in_flight = InFlight(remember=2)
    old, middle, new = (TaskKey("dag", "task", f"run-{i}") for i in range(3))
    for key in (old, middle, old, new):  # old's second terminal event makes it newer
        in_flight.finish(key)
    for key in (old, middle, new):
        in_flight.add(key)
    assert (old in in_flight, middle in in_flight, new in in_flight) == (False, True, False)
