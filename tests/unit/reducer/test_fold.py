"""The state machine: order-insensitive for valid histories, strict about illegal moves."""

from __future__ import annotations

import tracemalloc
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.messages import (
    Kind,
    State,
    TaskEvent,
    TaskKey,
    TaskRequest,
    decode_event,
    decode_request,
    encode,
    make_cancelled,
    make_event,
    make_request,
    validate,
)
from pipeline.reducer.fold import (
    LogRef,
    Outcome,
    TaskState,
    attach_log,
    attach_request,
    fold_event,
    rank,
    state_key,
)
from pipeline.routing import RouteTable, Source, route

KEY = TaskKey("etl", "extract", "manual__1")
LIMIT = 50
PATH = [State.SUBMITTED, State.QUEUED, State.LAUNCHED, State.RUNNING]
TERMINALS = [State.SUCCESS, State.FAILED]
SOURCES = {
    State.SUBMITTED: "producer",
    State.QUEUED: "router",
    State.LAUNCHED: "launcher",
    State.RUNNING: "watcher",
    State.SUCCESS: "watcher",
    State.FAILED: "watcher",
    State.CANCELLED: "launcher",
    State.DEAD_LETTERED: "router",
}


def event(state: State, n: int = 0, source: str | None = None, **fields: Any) -> TaskEvent:
    return make_event(
        KEY,
        source or SOURCES[state],
        state,
        discriminator=str(n),
        observed_at=f"2026-01-01T00:00:{n % 60:02d}Z",
        **fields,
    )


def fold_all(events: list[TaskEvent]) -> tuple[TaskState | None, list[Outcome]]:
    state: TaskState | None = None
    outcomes = []
    for e in events:
        state, outcome = fold_event(state, e, LIMIT)
        outcomes.append(outcome)
    return state, outcomes


def outcome_of(state: TaskState | None) -> dict[str, Any]:
    """The part of a state a valid history determines whatever the delivery order."""
    assert state is not None
    return {
        "state": state["state"],
        "reason": state.get("reason"),
        "exit_code": state.get("exit_code"),
        "last_event": state["history"][-1]["event_id"],
        "illegal_transitions": state.get("illegal_transitions", 0),
    }


@st.composite
def valid_histories(draw: st.DrawFn) -> list[TaskEvent]:
    """A forward path through the machine, at most one terminal, one event per step."""
    steps = [s for s in PATH if draw(st.booleans())]
    ending = draw(
        st.sampled_from([None, State.SUCCESS, State.FAILED, State.CANCELLED, State.DEAD_LETTERED])
    )
    if ending is State.DEAD_LETTERED:
        steps = [s for s in steps if s is State.SUBMITTED]
    if ending is not None:
        steps.append(ending)
    if not steps:
        steps = [State.QUEUED]
    exit_code = {"exit_code": 0 if ending is State.SUCCESS else 3}
    return [
        event(s, i, reason=f"{s}-reason", **(exit_code if s in TERMINALS else {}))
        for i, s in enumerate(steps)
    ]


@given(st.data())
def test_any_permutation_with_duplicates_folds_to_the_same_state(data: st.DataObject) -> None:
    history = data.draw(valid_histories())
    copies = data.draw(st.lists(st.sampled_from(history), max_size=2 * len(history)))
    delivered = data.draw(st.permutations(history + copies))

    in_order, outcomes = fold_all(history)
    assert all(o is Outcome.APPLIED for o in outcomes)
    shuffled, _ = fold_all(delivered)

    assert outcome_of(shuffled) == outcome_of(in_order)
    assert shuffled is not None
    validate(Kind.TASK_STATE, shuffled)


arbitrary_events = st.lists(
    st.builds(
        lambda s, n, src: event(s, n, source=src),
        st.sampled_from(list(State)),
        st.integers(0, 5),
        st.sampled_from(["router", "launcher", "watcher", "sweeper", "celery-monitor"]),
    ),
    min_size=1,
    max_size=25,
)


@given(arbitrary_events)
def test_illegal_transitions_never_apply_and_state_never_moves_back(
    events: list[TaskEvent],
) -> None:
    state: TaskState | None = None
    counted = 0
    for e in events:
        before = state
        state, outcome = fold_event(state, e, LIMIT)
        if outcome is Outcome.ILLEGAL:
            counted += 1
            assert before is not None
            assert state["state"] == before["state"]
            assert state["history"] == before["history"]
        elif outcome is Outcome.APPLIED:
            assert state["history"][-1]["event_id"] == e["event_id"]
        else:
            assert state == before
        if before is not None:
            assert rank(state["state"]) >= rank(before["state"])
            if before["state"] in (*TERMINALS, State.CANCELLED, State.DEAD_LETTERED):
                assert state["state"] == before["state"]
    assert state is not None
    assert state.get("illegal_transitions", 0) == counted
    validate(Kind.TASK_STATE, state)


def test_late_queued_after_running_changes_nothing() -> None:
    state, _ = fold_all([event(State.QUEUED, 1), event(State.RUNNING, 2)])
    after, outcome = fold_event(state, event(State.QUEUED, 9), LIMIT)
    assert outcome is Outcome.STALE
    assert after == state


def test_conflicting_terminal_is_counted_once_not_applied() -> None:
    state, _ = fold_all([event(State.RUNNING, 1), event(State.SUCCESS, 2, exit_code=0)])
    late_failure = event(State.FAILED, 3, reason="boom")
    state, first = fold_event(state, late_failure, LIMIT)
    state, again = fold_event(state, late_failure, LIMIT)
    assert (first, again) == (Outcome.ILLEGAL, Outcome.DUPLICATE)
    assert state["state"] == "success"
    assert state["illegal_transitions"] == 1


def test_dead_letter_after_routing_is_illegal() -> None:
    state, _ = fold_all([event(State.QUEUED, 1)])
    _, outcome = fold_event(state, event(State.DEAD_LETTERED, 2), LIMIT)
    assert outcome is Outcome.ILLEGAL


def test_history_keeps_the_causing_event_and_is_bounded() -> None:
    steps = [event(s, i) for i, s in enumerate([*PATH, State.SUCCESS])]
    state: TaskState | None = None
    for e in steps:
        state, _ = fold_event(state, e, 3)
    assert state is not None
    assert [h["event_id"] for h in state["history"]] == [e["event_id"] for e in steps[-3:]]
    assert state["history"][-1]["source"] == "watcher"


def test_sweeper_redrive_counts_once_then_failure_applies() -> None:
    state, _ = fold_all([event(State.QUEUED, 1)])
    redrive = event(State.QUEUED, 7, source="sweeper", reason="not launched")
    state, first = fold_event(state, redrive, LIMIT)
    state, again = fold_event(state, redrive, LIMIT)
    assert (first, again) == (Outcome.APPLIED, Outcome.DUPLICATE)
    assert state["redriven"] == 1
    state, outcome = fold_event(state, event(State.FAILED, 8, source="sweeper"), LIMIT)
    assert outcome is Outcome.APPLIED
    assert state["state"] == "failed"


PULL_BACKOFF = event(State.LAUNCHED, 4, source="watcher", reason="ImagePullBackOff: Back-off")


@given(st.permutations([
    event(State.QUEUED, 1),
    event(State.LAUNCHED, 2),  # the launcher's: no reason
    event(State.LAUNCHED, 3, source="watcher", reason="Unschedulable: 0/1 nodes are available"),
    PULL_BACKOFF,  # the latest
]))  # fmt: skip
def test_a_launched_try_shows_the_latest_reason_its_pod_is_held_back_in_any_order(
    delivered: list[TaskEvent],
) -> None:
    state, _ = fold_all(delivered)
    assert state is not None
    assert (state["state"], state["reason"]) == ("launched", PULL_BACKOFF["reason"])
    assert state["history"][-1]["event_id"] == PULL_BACKOFF["event_id"]
    validate(Kind.TASK_STATE, state)


def test_a_reason_to_wait_never_moves_a_running_try_back() -> None:
    state, _ = fold_all([event(State.LAUNCHED, 1), event(State.RUNNING, 2)])
    held = event(State.LAUNCHED, 3, source="watcher", reason="ImagePullBackOff")
    after, outcome = fold_event(state, held, LIMIT)
    assert (outcome, after) == (Outcome.STALE, state)


def test_routed_request_is_kept_and_implies_queued() -> None:
    request = make_request(KEY, ["airflow", "tasks", "run"], "default")
    request["routing"] = {"target": "celery", "topic": "t", "routed_at": "2026-01-01T00:00:03Z"}
    state, outcome = attach_request(None, request, LIMIT)
    assert outcome is Outcome.APPLIED
    assert (state["state"], state["executor"], state["request"]) == ("queued", "celery", request)
    assert state["updated_at"] == "2026-01-01T00:00:03Z"
    again, outcome = attach_request(state, request, LIMIT)
    assert again == state and outcome is Outcome.DUPLICATE
    _, outcome = fold_event(state, event(State.QUEUED, 4), LIMIT)
    assert outcome is Outcome.STALE
    validate(Kind.TASK_STATE, state)


def test_a_routed_request_and_the_routers_event_fold_the_same_in_either_order() -> None:
    """The reducer reads them from two topics; which comes first must not show in the state
    (else a replay's refold differs from the live state)."""
    request = make_request(KEY, ["airflow", "tasks", "run"], "default")
    table = RouteTable.from_settings(Settings())
    source = Source(topic="tasks.requests", partition=0, offset=7, timestamp=0)
    out = route(encode(request), None, source, table, now="2026-01-01T00:00:03Z")
    [routed, queued] = [value for _, _, value in out.messages]
    routed_request, queued_event = decode_request(routed), decode_event(queued)

    request_first, _ = attach_request(None, routed_request, LIMIT)
    request_first, outcome = fold_event(request_first, queued_event, LIMIT)
    assert outcome is Outcome.DUPLICATE
    event_first, _ = fold_event(None, queued_event, LIMIT)
    event_first, _ = attach_request(event_first, routed_request, LIMIT)
    assert request_first == event_first
    assert [step["source"] for step in event_first["history"]] == ["router"]


def test_a_request_published_again_after_its_try_finished_changes_no_state() -> None:
    request = make_request(KEY, ["airflow", "tasks", "run"], "default")
    table = RouteTable.from_settings(Settings())

    def routed(offset: int, now: str) -> tuple[TaskRequest, TaskEvent]:
        source = Source(topic="tasks.requests", partition=0, offset=offset, timestamp=0)
        out = route(encode(request), None, source, table, now=now)
        [routed, queued] = [value for _, _, value in out.messages]
        return decode_request(routed), decode_event(queued)

    first, queued = routed(7, "2026-01-01T00:00:03Z")
    state, _ = attach_request(None, first, LIMIT)
    for e in (queued, event(State.LAUNCHED, 4), event(State.SUCCESS, 5)):
        state, _ = fold_event(state, e, LIMIT)
    again, queued_again = routed(8, "2026-01-01T01:00:00Z")  # a replay into tasks.requests
    after, outcome = fold_event(state, queued_again, LIMIT)
    assert outcome is Outcome.DUPLICATE, "same request, same event id"
    after, _ = attach_request(after, again, LIMIT)
    assert (after["state"], after["history"]) == ("success", state["history"])
    assert "illegal_transitions" not in after


CANCEL = {"reason": "runaway", "requested_by": "alice", "requested_at": "2026-01-01T00:01:00Z"}


def cancelled(source: str = "launcher") -> TaskEvent:
    return make_cancelled(KEY, source, CANCEL, executor="kubernetes")


@given(st.sampled_from([State.SUBMITTED, State.QUEUED, State.LAUNCHED, State.RUNNING]))
def test_cancelled_ends_any_unfinished_try_with_who_and_why(before: State) -> None:
    state, _ = fold_all([event(before, 1)])
    state, outcome = fold_event(state, cancelled(), LIMIT)
    assert outcome is Outcome.APPLIED
    assert state["state"] == "cancelled" and state["cancel"] == CANCEL
    assert state["reason"] == "cancelled by alice: runaway"
    validate(Kind.TASK_STATE, state)


def test_cancelled_is_sticky_and_a_repeated_cancel_changes_nothing() -> None:
    state, _ = fold_all([event(State.RUNNING, 1), cancelled()])
    assert fold_event(state, cancelled(), LIMIT) == (state, Outcome.DUPLICATE)
    assert fold_event(state, cancelled("watcher"), LIMIT) == (state, Outcome.STALE)
    after, outcome = fold_event(state, event(State.FAILED, 9, reason="exit 143"), LIMIT)
    assert outcome is Outcome.ILLEGAL and after["state"] == "cancelled"
    assert fold_event(state, event(State.RUNNING, 8), LIMIT)[1] is Outcome.STALE


def test_a_finished_try_stays_as_it_was_when_a_cancel_arrives() -> None:
    state, _ = fold_all([event(State.RUNNING, 1), event(State.SUCCESS, 2, exit_code=0)])
    after, outcome = fold_event(state, cancelled(), LIMIT)
    assert outcome is Outcome.ILLEGAL
    assert after["state"] == "success" and "cancel" not in after


def test_log_index_keeps_the_newest_record_of_a_try() -> None:
    state, _ = fold_all([event(State.SUCCESS, 1)])
    first: LogRef = {"partition": 2, "offset": 10, "bytes": 5}
    newer: LogRef = {"partition": 2, "offset": 12, "bytes": 7}
    indexed, outcome = attach_log(state, KEY.to_wire(), first, "2026-01-01T00:00:03Z")
    assert outcome is Outcome.APPLIED and indexed["log"] == first
    assert attach_log(indexed, KEY.to_wire(), first, "x")[1] is Outcome.DUPLICATE
    indexed, _ = attach_log(indexed, KEY.to_wire(), newer, "x")
    assert attach_log(indexed, KEY.to_wire(), first, "x")[1] is Outcome.STALE
    assert indexed["state"] == "success" and indexed["log"] == newer
    validate(Kind.TASK_STATE, indexed)


def test_a_kept_state_key_costs_memory_in_proportion_to_its_length() -> None:
    """The table keeps a key per try for good: ~60 bytes of key must not hold kilobytes."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keys = [state_key(TaskKey("dag", "task", f"run-{i}").to_wire()) for i in range(2_000)]
        per_key = (tracemalloc.get_traced_memory()[0] - before) / len(keys)
    finally:
        tracemalloc.stop()
    assert per_key < 4 * max(len(key) for key in keys)
