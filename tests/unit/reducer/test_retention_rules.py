"""Which finished tries the retention pass forgets, and which records are too old to fold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pipeline.messages import State, TaskKey, make_event
from pipeline.reducer.fold import TaskState, fold_event, state_key
from pipeline.reducer.listing import Arrivals
from pipeline.reducer.retention import before_horizon, forgettable, horizon, old_keys

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
HORIZON = (NOW - timedelta(hours=1)).timestamp()


def state(n: int, name: str, minutes_ago: float, ran_for_min: float = 0.0) -> TaskState:
    """Try `n`, first seen `minutes_ago` and last changed `ran_for_min` later, in `name`."""
    first = (NOW - timedelta(minutes=minutes_ago)).isoformat()
    last = (NOW - timedelta(minutes=minutes_ago - ran_for_min)).isoformat()
    event = make_event(TaskKey("d", f"t{n}", "r"), "watcher", State.QUEUED)
    folded, _ = fold_event(None, {**event, "observed_at": first}, 50)
    return {**folded, "state": name, "updated_at": last}


def arrivals_of(states: list[TaskState]) -> Arrivals:
    table = {state_key(s["key"]): s for s in states}
    arrivals = Arrivals(table.get)
    for key, s in table.items():
        arrivals.put(key, s)
    return arrivals


def tasks(keys: list[bytes]) -> list[str]:
    return [key.decode().split('"')[3] for key in keys]


def test_no_retention_keeps_everything() -> None:
    assert horizon(NOW.timestamp(), 0) is None
    assert not before_horizon("2000-01-01T00:00:00Z", None)
    assert horizon(NOW.timestamp(), 3600) == HORIZON


def test_a_time_that_does_not_parse_is_not_before_the_horizon() -> None:
    assert not before_horizon("yesterday", HORIZON)
    assert not before_horizon(12, HORIZON)  # type: ignore[arg-type]
    assert before_horizon((NOW - timedelta(hours=2)).isoformat(), HORIZON)


def test_only_finished_tries_last_changed_before_the_horizon_are_forgettable() -> None:
    assert forgettable(state(0, "success", 90), HORIZON)
    assert forgettable(state(0, "dead_lettered", 90), HORIZON)
    assert not forgettable(state(0, "running", 90), HORIZON)
    assert not forgettable(state(0, "failed", 30), HORIZON)
    assert not forgettable(state(0, "failed", 90, ran_for_min=40), HORIZON)


def test_the_walk_skips_unfinished_and_stops_at_the_first_young_finished_try() -> None:
    arrivals = arrivals_of(
        [
            state(0, "success", 120),
            state(1, "running", 110),  # old but unfinished: kept, walked past
            state(2, "failed", 100, ran_for_min=80),  # first seen old, changed lately: kept
            state(3, "cancelled", 90),
            state(4, "success", 30),  # young: the walk ends here
            state(5, "success", 95),  # clock skew: found by a later pass
        ]
    )
    assert tasks(old_keys(arrivals, HORIZON, 10)) == ["t0", "t3"]
    assert tasks(old_keys(arrivals, HORIZON, 1)) == ["t0"]


@given(st.lists(st.tuples(st.sampled_from(["success", "running"]), st.integers(0, 200))))
def test_with_arrivals_in_first_seen_order_the_walk_finds_every_forgettable_try(
    tries: list[tuple[str, int]],
) -> None:
    ordered = sorted(tries, key=lambda t: -t[1])  # oldest first, as they arrived
    states = [state(n, name, age) for n, (name, age) in enumerate(ordered)]
    found = tasks(old_keys(arrivals_of(states), HORIZON, len(states) + 1))
    assert found == [s["key"]["task_id"] for s in states if forgettable(s, HORIZON)]


def test_a_forgotten_key_leaves_the_counts() -> None:
    arrivals = arrivals_of([state(0, "success", 90), state(1, "running", 10)])
    arrivals.forget(state_key(state(0, "success", 90)["key"]))
    assert arrivals.summary()["by_state"] == {"running": 1}
    assert arrivals.summary()["tasks"] == 1
