"""Backend entries to pipeline states, and the task identity."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.celery_bridge.app import task_id_for
from pipeline.celery_bridge.states import NOT_STARTED, Observation, observe
from pipeline.messages import State, TaskKey


def test_absent_and_pending_entries_mean_not_started() -> None:
    assert observe(None) == NOT_STARTED
    assert observe({"status": "PENDING", "result": None}) == NOT_STARTED


def test_started_is_running() -> None:
    assert observe({"status": "STARTED", "result": {"pid": 1}}) == Observation(State.RUNNING)


def test_a_finished_command_carries_its_exit_code() -> None:
    ok = {"ok": True, "exit_code": 0, "reason": None}
    bad = {"ok": False, "exit_code": 3, "reason": "exit code 3"}
    refused = {"ok": False, "exit_code": None, "reason": "command not allowed: 'rm'"}
    assert observe({"status": "SUCCESS", "result": ok}) == Observation(State.SUCCESS, None, 0)
    assert observe({"status": "SUCCESS", "result": bad}) == Observation(
        State.FAILED, "exit code 3", 3
    )
    assert observe({"status": "SUCCESS", "result": refused}).reason == refused["reason"]


def test_celery_failures_fail_the_task_and_revokes_cancel_it() -> None:
    failure = {"status": "FAILURE", "result": {"exc_type": "WorkerLostError", "exc_message": ["x"]}}
    assert observe(failure) == Observation(State.FAILED, "celery task failed: WorkerLostError: x")
    assert observe({"status": "REVOKED", "result": None}).state == State.CANCELLED
    assert observe({"status": "SUCCESS", "result": 42}).state == State.FAILED


def test_a_cancelled_command_is_cancelled_with_who_asked() -> None:
    cancel = {"reason": "stop", "requested_by": "bob", "requested_at": "2026-01-01T00:00:00Z"}
    result = {"ok": False, "exit_code": None, "reason": "cancelled by bob: stop", "cancel": cancel}
    assert observe({"status": "SUCCESS", "result": result}) == Observation(
        State.CANCELLED, "cancelled by bob: stop", None, cancel
    )


keys = st.builds(
    TaskKey, st.text(min_size=1), st.text(min_size=1), st.text(min_size=1),
    st.integers(-1, 10), st.integers(1, 5),
)  # fmt: skip


@given(keys, keys)
def test_task_ids_are_deterministic_and_distinct_per_try(a: TaskKey, b: TaskKey) -> None:
    assert task_id_for(a) == task_id_for(TaskKey.from_wire(a.to_wire()))
    assert (task_id_for(a) == task_id_for(b)) == (a == b)
