"""Which events free a launcher slot: terminal ones of Kubernetes tasks, parsed only then."""

from __future__ import annotations

import pytest

from pipeline.launcher.inflight import finished_key
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
