"""The task state machine as a pure fold: `fold_event(state, event) -> (state, outcome)`.

    submitted -> queued -> launched -> running -> success | failed
    failed and cancelled from any non-terminal state; dead_lettered only before a request
    was routed. A launched try may be told again why its pod waits (a `launched` with a
    reason): the state's reason says what holds it back.

`submitted` is a request no stage has routed: a state is created by its first event, the
router's `queued` (or `dead_lettered`), so a recorded history starts there.

Events may arrive late, twice, or out of order (several producers, at-least-once delivery),
so the fold is order-insensitive for any valid history: it only moves *forward* in rank,
treats a lower-or-equal rank as stale, recognises a re-delivered event by its id, and keeps
terminal states sticky for the try. A conflicting terminal (success after failed) or a
`dead_lettered` for an already routed request is illegal: counted, never applied.

No I/O and no clock: every timestamp comes from the events, so replaying a topic with this
module rebuilds exactly the state the live reducer holds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, NotRequired, TypedDict, cast

import orjson

from pipeline.messages import (
    SCHEMA_VERSION,
    TERMINAL_STATES,
    CancelInfo,
    State,
    TaskEvent,
    TaskKey,
    TaskKeyDict,
    TaskRequest,
    epoch_s,
    right_sized,
)
from pipeline.routing import queued_event

SWEEPER: Final = "sweeper"
"""Source of the sweeper's events; its `queued` on a queued task records a re-drive."""

_RANK: Final = {
    State.SUBMITTED: 0,
    State.QUEUED: 1,
    State.LAUNCHED: 2,
    State.RUNNING: 3,
    State.SUCCESS: 4,
    State.FAILED: 4,
    State.CANCELLED: 4,
    State.DEAD_LETTERED: 4,
}

_MERGED_FIELDS: Final = (
    "executor", "pod_name", "namespace", "celery_task_id", "exit_code", "cancel",
)  # fmt: skip


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    ILLEGAL = "illegal"
    EXPIRED = "expired"
    """Never the fold's: the reducer's, for a record from before its retention horizon about
    a try it does not hold (see `pipeline.reducer.retention`)."""


class Transition(TypedDict):
    state: str
    event_id: str
    source: str
    reason: str | None
    observed_at: str


class LogRef(TypedDict):
    """Where a try's captured output lies on the logs topic."""

    partition: int
    offset: int
    bytes: int


class TaskState(TypedDict):
    """One try of one task, as kept in the state topic (schemas/task-state.schema.json)."""

    schema_version: int
    key: TaskKeyDict
    state: str
    updated_at: str
    history: list[Transition]
    first_seen: NotRequired[str]
    executor: NotRequired[str]
    reason: NotRequired[str | None]
    pod_name: NotRequired[str]
    namespace: NotRequired[str]
    celery_task_id: NotRequired[str]
    exit_code: NotRequired[int]
    cancel: NotRequired[CancelInfo]
    log: NotRequired[LogRef]
    redriven: NotRequired[int]
    illegal_transitions: NotRequired[int]
    illegal_event_ids: NotRequired[list[str]]
    request: NotRequired[TaskRequest]
    request_dropped: NotRequired[int]


def state_key(key: TaskKeyDict) -> bytes:
    """The state topic's key: the full task key, try included, since each try is a record.
    Right-sized, since the table keeps one per try for the retention (days)."""
    encoded = orjson.dumps(
        [key["dag_id"], key["task_id"], key["run_id"], key["map_index"], key["try_number"]]
    )
    return right_sized(encoded)


def rank(state: str) -> int:
    # A StrEnum member hashes and compares as its value, so the plain string looks it up
    # (a `State(state)` per call cost more than the rest of a fold step).
    return _RANK[state]  # type: ignore[index]


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES


def classify(current: TaskState | None, event: TaskEvent) -> Outcome:
    """What `event` would do to `current`, without changing anything."""
    if current is None:
        return Outcome.APPLIED
    if _seen(current, event["event_id"]):
        return Outcome.DUPLICATE
    old, new = current["state"], event["state"]
    if is_terminal(old):
        return Outcome.ILLEGAL if is_terminal(new) and new != old else Outcome.STALE
    if new == State.DEAD_LETTERED and rank(old) > rank(State.SUBMITTED):
        return Outcome.ILLEGAL
    if rank(new) > rank(old) or _is_redrive(current, event) or _is_newer_hold(current, event):
        return Outcome.APPLIED
    return Outcome.STALE


def fold_event(
    current: TaskState | None, event: TaskEvent, history_limit: int
) -> tuple[TaskState, Outcome]:
    """Fold one event into the state of its try; the input state is never mutated."""
    outcome = classify(current, event)
    if outcome is Outcome.APPLIED:
        return _apply(current, event, history_limit), outcome
    assert current is not None  # only a first event can be applied to nothing
    if outcome is Outcome.ILLEGAL:
        return _count_illegal(current, event, history_limit), outcome
    return current, outcome


def attach_request(
    current: TaskState | None,
    request: TaskRequest,
    history_limit: int,
    *,
    size: int = 0,
    keep_bytes: int | None = None,
) -> tuple[TaskState, Outcome]:
    """Keep a routed request in its state (the sweeper re-drives it from there).

    A routed request proves the task was queued, so when it arrives before the router's
    own `queued` event it records that event, rebuilt from the routing stamp: same id,
    source and time, so the state is the same whichever of the two topics is read first.
    One of `size` bytes, over `keep_bytes`, is not kept (the state records its size): a
    state record must fit in one message, and the sweeper then fails instead of re-driving.
    """
    routing = request.get("routing") or {}
    key = TaskKey.from_wire(request["key"])
    routed_at = routing.get("routed_at", request["submitted_at"])
    inferred = cast(TaskEvent, queued_event(key, request, routing.get("target"), routed_at))
    state, outcome = fold_event(current, inferred, history_limit)
    if keep_bytes is not None and size > keep_bytes:
        if state.get("request_dropped") == size and "request" not in state:
            return state, outcome
        kept = {k: v for k, v in state.items() if k != "request"}
        return {**kept, "request_dropped": size}, Outcome.APPLIED  # type: ignore[typeddict-item]
    if state.get("request") == request:
        return state, outcome
    return {**state, "request": request}, Outcome.APPLIED


def attach_log(
    current: TaskState | None, key: TaskKeyDict, ref: LogRef, observed_at: str
) -> tuple[TaskState, Outcome]:
    """Index a try's captured output: the newest record on the logs topic wins."""
    base = current if current is not None else new_state(key, observed_at)
    known = base.get("log")
    if known == ref:
        return base, Outcome.DUPLICATE
    if known is not None and (known["partition"], known["offset"]) > (
        ref["partition"],
        ref["offset"],
    ):
        return base, Outcome.STALE
    return {**base, "log": ref}, Outcome.APPLIED


def fit(state: TaskState, max_bytes: int) -> TaskState | None:
    """`state` as it may be written to the changelog: itself when it fits in `max_bytes`,
    else without its request and with a short history, else None (it cannot be kept)."""
    kept = fit_encoded(state, max_bytes)
    return kept[0] if kept is not None else None


def fit_encoded(state: TaskState, max_bytes: int) -> tuple[TaskState, bytes] | None:
    """`fit`, with the kept state's encoding (the changelog record), so it is encoded once."""
    encoded = orjson.dumps(state)
    if len(encoded) <= max_bytes:
        return state, encoded
    trimmed: TaskState = {**state, "history": state["history"][-5:]}
    trimmed.pop("request", None)
    if "illegal_event_ids" in trimmed:
        trimmed["illegal_event_ids"] = trimmed["illegal_event_ids"][-5:]
    encoded = orjson.dumps(trimmed)
    return (trimmed, encoded) if len(encoded) <= max_bytes else None


def new_state(key: TaskKeyDict, observed_at: str) -> TaskState:
    return {
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "state": State.SUBMITTED.value,
        "first_seen": observed_at,
        "updated_at": observed_at,
        "history": [],
    }


def _apply(current: TaskState | None, event: TaskEvent, history_limit: int) -> TaskState:
    base = current if current is not None else new_state(event["key"], event["observed_at"])
    state: TaskState = {**base}
    raw = cast(dict[str, Any], event)
    for name in _MERGED_FIELDS:
        if raw.get(name) is not None:
            state[name] = raw[name]  # type: ignore[literal-required]
    if _is_redrive(current, event):
        state["redriven"] = state.get("redriven", 0) + 1
    state["state"] = event["state"]
    state["reason"] = event.get("reason")
    state["updated_at"] = event["observed_at"]
    step: Transition = {
        "state": event["state"],
        "event_id": event["event_id"],
        "source": event["source"],
        "reason": event.get("reason"),
        "observed_at": event["observed_at"],
    }
    state["history"] = [*base["history"], step][-history_limit:]
    return state


def _count_illegal(current: TaskState, event: TaskEvent, history_limit: int) -> TaskState:
    ids = [*current.get("illegal_event_ids", []), event["event_id"]][-history_limit:]
    return {
        **current,
        "illegal_transitions": current.get("illegal_transitions", 0) + 1,
        "illegal_event_ids": ids,
    }


def _seen(state: TaskState, event_id: str) -> bool:
    for step in state["history"]:  # a plain loop: this runs for every event folded
        if step["event_id"] == event_id:
            return True
    return event_id in state.get("illegal_event_ids", ())


def _is_newer_hold(current: TaskState, event: TaskEvent) -> bool:
    """A `launched` that says why the pod waits (the watcher's: unschedulable, an image that
    does not pull) on a launched try: it beats a `launched` without a reason, and among those
    with one the latest (by time, then id) stands, so any delivery order keeps the same one."""
    if not (current["state"] == event["state"] == State.LAUNCHED and event.get("reason")):
        return False
    if current.get("reason") is None:
        return True
    last_id = current["history"][-1]["event_id"] if current["history"] else ""
    return _order(event["observed_at"], event["event_id"]) > _order(current["updated_at"], last_id)


def _order(observed_at: str, event_id: str) -> tuple[float, str]:
    """A total order on events by time, then id; a time the parser refuses sorts first."""
    at = epoch_s(observed_at)
    return (float("-inf") if at is None else at), event_id


def _is_redrive(current: TaskState | None, event: TaskEvent) -> bool:
    """The sweeper's `queued` on a task still queued: the request was published again."""
    return (
        current is not None
        and current["state"] == State.QUEUED
        and event["state"] == State.QUEUED
        and event["source"] == SWEEPER
    )
