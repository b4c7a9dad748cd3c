"""Task listings: newest first by arrival, paged, filtered, and counted without a scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.messages import State, TaskKey, make_event
from pipeline.reducer.fold import TaskState, fold_event, state_key
from pipeline.reducer.listing import Arrivals, QueryError, TaskQuery, cell

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def state_of(n: int, state: State = State.QUEUED, executor: str = "celery") -> TaskState:
    key = TaskKey(f"dag-{n % 3}", f"task-{n}", f"run-{n % 2}", -1, 1)
    at = (T0 + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")
    folded, _ = fold_event(
        None, make_event(key, "test", state, executor=executor, observed_at=at), 10
    )
    return folded


def filled(count: int, table: dict[bytes, TaskState] | None = None) -> Arrivals:
    """Arrivals of `count` states, read from `table` (filled here) as from the store."""
    table = {} if table is None else table
    arrivals = Arrivals(table.get)
    for n in range(count):
        state = state_of(n)
        table[state_key(state["key"])] = state
        arrivals.put(state_key(state["key"]), state)
    arrivals.stale = False
    return arrivals


def names(states: list[TaskState]) -> list[str]:
    return [s["key"]["task_id"] for s in states]


def test_pages_walk_newest_first_and_say_whether_more_match() -> None:
    arrivals = filled(7)
    first, more = arrivals.page(TaskQuery(), 0, 3)
    assert names(first) == ["task-6", "task-5", "task-4"] and more
    last, more = arrivals.page(TaskQuery(), 6, 3)
    assert names(last) == ["task-0"] and not more


def test_an_update_keeps_a_task_in_its_place_and_moves_its_count() -> None:
    table: dict[bytes, TaskState] = {}
    arrivals = filled(3, table)
    old = state_of(0)
    done, _ = fold_event(old, make_event(TaskKey.from_wire(old["key"]), "w", State.SUCCESS), 10)
    table[state_key(done["key"])] = done
    arrivals.put(state_key(done["key"]), done)
    page, _ = arrivals.page(TaskQuery(), 0, 10)
    assert names(page) == ["task-2", "task-1", "task-0"]
    assert page[-1]["state"] == "success"
    summary = arrivals.summary()
    assert summary["tasks"] == 3
    assert summary["by_state"] == {"queued": 2, "success": 1}
    assert summary["by_executor_state"] == {"celery:queued": 2, "celery:success": 1}


def test_filters_combine_exact_fields_text_and_time() -> None:
    arrivals = filled(12)
    query = TaskQuery.from_params({"dag_id": "dag-1", "run_id": "run-1", "q": "TASK-"})
    assert names(arrivals.page(query, 0, 10)[0]) == ["task-7", "task-1"]
    since = (T0 + timedelta(seconds=9)).isoformat()
    assert names(arrivals.page(TaskQuery.from_params({"since": since}), 0, 10)[0]) == [
        "task-11", "task-10", "task-9",
    ]  # fmt: skip
    assert arrivals.page(TaskQuery.from_params({"state": "failed"}), 0, 10) == ([], False)
    assert names(arrivals.page(TaskQuery.from_params({"q": "task-1"}), 0, 10)[0]) == [
        "task-11", "task-10", "task-1",
    ]  # fmt: skip


@pytest.mark.parametrize("bad", [{"since": "yesterday"}, {"until": "2026-01-01T00:00:00"}])
def test_time_bounds_must_be_zoned_timestamps(bad: dict[str, str]) -> None:
    with pytest.raises(QueryError):
        TaskQuery.from_params(bad)


def test_a_changed_table_rebuilds_the_order_from_first_seen() -> None:
    states = [state_of(n) for n in (2, 0, 1)]
    table = {state_key(s["key"]): s for s in states}
    arrivals = Arrivals(table.get)
    arrivals.sync(table.items(), 3)
    assert names(arrivals.page(TaskQuery(), 0, 10)[0]) == ["task-2", "task-1", "task-0"]
    assert arrivals.summary()["by_state"] == {"queued": 3}
    arrivals.sync([], 3)  # same size, not stale: kept
    assert arrivals.summary()["tasks"] == 3


def test_a_first_page_does_not_walk_the_whole_table() -> None:
    arrivals = filled(50_000)
    table_get = arrivals.lookup
    read = 0

    def counting(key: bytes) -> TaskState | None:
        nonlocal read
        read += 1
        return table_get(key)

    arrivals.lookup = counting
    page, more = arrivals.page(TaskQuery(), 0, 50)
    assert len(page) == 50 and more
    assert read == 50


def test_filters_on_key_state_and_executor_read_only_the_states_they_show() -> None:
    table: dict[bytes, TaskState] = {}
    arrivals = filled(30, table)
    for n in (4, 9, 10):
        queued = state_of(n)
        event = make_event(TaskKey.from_wire(queued["key"]), "w", State.SUCCESS)
        done, _ = fold_event(queued, event, 10)
        table[state_key(done["key"])] = done
        arrivals.put(state_key(done["key"]), done)
    read: list[bytes] = []

    def lookup(key: bytes) -> TaskState | None:
        read.append(key)
        return table.get(key)

    arrivals.lookup = lookup
    query = TaskQuery.from_params({"state": "success", "dag_id": "dag-1", "q": "TASK-"})
    shown, more = arrivals.page(query, 0, 10)
    assert names(shown) == ["task-10", "task-4"] and not more
    assert len(read) == 2
    assert arrivals.page(TaskQuery.from_params({"executor": "kubernetes"}), 0, 10) == ([], False)
    deep, more = arrivals.page(TaskQuery(), 25, 10)
    assert names(deep) == [f"task-{n}" for n in range(4, -1, -1)] and not more
    assert len(read) == 2 + 5  # the 25 skipped were never read


def test_a_time_range_reads_each_state_it_judges() -> None:
    arrivals = filled(10)
    since = (T0 + timedelta(seconds=7)).isoformat()
    assert names(arrivals.page(TaskQuery.from_params({"since": since}), 0, 2)[0]) == [
        "task-9", "task-8",
    ]  # fmt: skip


NAMES = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8
) | st.sampled_from(["etl", "Etl/x", 'a"b', "a\\nb", "a,b", "\u0130x", "run-1"])


@given(
    dag=NAMES, task=NAMES, run=NAMES,
    state=st.sampled_from([State.QUEUED, State.SUCCESS]),
    executor=st.sampled_from(["celery", "kubernetes", None]),
    exact=st.lists(st.tuples(st.sampled_from(["dag_id", "task_id", "run_id", "state",
                                              "executor"]), NAMES), max_size=2),
    text=NAMES | st.sampled_from(["", "et", "x", "i", "n", "1/", "-1"]),
)  # fmt: skip
@example(dag="\u0130x", task="t", run="r", state=State.QUEUED, executor=None, exact=[], text="i")
@example(dag="d", task="t", run="a\nb", state=State.QUEUED, executor=None, exact=[], text="n")
def test_a_key_and_its_cell_decide_a_query_as_the_whole_state_would(
    dag: str, task: str, run: str, state: State, executor: str | None,
    exact: list[tuple[str, str]], text: str,
) -> None:  # fmt: skip
    key = TaskKey(dag, task, run, -1, 1)
    folded, _ = fold_event(None, make_event(key, "test", state, executor=executor), 10)
    query = TaskQuery(tuple(exact), text.strip().lower())
    key_matches = query.key_matcher()
    by_entry = query.allows_cell(cell(folded)) and (
        key_matches is None or key_matches(state_key(folded["key"]))
    )
    assert by_entry == query.matches(folded)


def refuse_lookup(key: bytes) -> TaskState | None:
    raise AssertionError("the listing decoded a state to order or count what it was told")


def test_recovery_into_an_empty_listing_orders_by_arrival_without_decoding() -> None:
    table = {state_key(s["key"]): s for s in (state_of(n) for n in (2, 0, 3, 1))}
    arrivals = Arrivals(refuse_lookup)
    for key, state in table.items():  # changelog order is not arrival order
        arrivals.recovered(key, state)
    arrivals.forget(state_key(state_of(3)["key"]))  # a tombstone later in the changelog
    arrivals.recovery_completed()
    arrivals.sync(((k, refuse_lookup(k)) for k in table), 3)  # current: the table is not read
    assert [k for k in reversed(arrivals.cell_of)] == [
        state_key(state_of(n)["key"]) for n in (2, 1, 0)
    ]
    assert arrivals.summary()["by_state"] == {"queued": 3}


def test_recovery_beside_states_already_held_rebuilds_at_the_next_read() -> None:
    table: dict[bytes, TaskState] = {}
    arrivals = filled(2, table)
    newer = state_of(5)
    table[state_key(newer["key"])] = newer
    arrivals.recovered(state_key(newer["key"]), newer)
    older = state_of(-1)  # recovered after the held ones, but it arrived before them
    table[state_key(older["key"])] = older
    arrivals.recovered(state_key(older["key"]), older)
    arrivals.recovery_completed()
    assert arrivals.stale
    arrivals.recovery_completed()  # another round that brought nothing: the rebuild is owed
    assert arrivals.stale
    arrivals.sync(table.items(), len(table))
    assert names(arrivals.page(TaskQuery(), 0, 10)[0]) == ["task-5", "task-1", "task-0", "task--1"]
    assert not arrivals.stale


def run_query(dag: str, run: str) -> TaskQuery:
    return TaskQuery.from_params({"dag_id": dag, "run_id": run})


def test_a_run_query_walks_that_runs_tries_alone_newest_first() -> None:
    table: dict[bytes, TaskState] = {}
    arrivals = filled(12, table)
    walked: list[bytes] = []

    def lookup(key: bytes) -> TaskState | None:
        walked.append(key)
        return table.get(key)

    arrivals.lookup = lookup
    found, more = arrivals.page(run_query("dag-1", "run-0"), 0, 10)
    assert names(found) == ["task-10", "task-4"] and not more  # n % 3 == 1 and n % 2 == 0
    assert arrivals.page(run_query("dag-1", "run-9"), 0, 10) == ([], False)
    assert len(walked) == 2
    arrivals.cell_of = NoWalk(arrivals.cell_of)  # from here, a walk of every key fails
    assert names(arrivals.page(run_query("dag-1", "run-0"), 0, 10)[0]) == ["task-10", "task-4"]
    assert arrivals.keys_of(("dag-1", "run-0")) == [state_key(state_of(n)["key"]) for n in (4, 10)]


class NoWalk(dict[bytes, str]):
    def items(self) -> Any:
        raise AssertionError("the listing walked every key")


def test_a_run_id_alone_walks_its_run_when_only_one_dag_has_it() -> None:
    table: dict[bytes, TaskState] = {}
    arrivals = filled(6, table)  # run-0 and run-1, each in three dags
    only, _ = fold_event(
        None, make_event(TaskKey("etl", "load", "once", -1, 1), "t", State.QUEUED), 10
    )
    table[state_key(only["key"])] = only
    arrivals.put(state_key(only["key"]), only)
    shared = arrivals.page(TaskQuery.from_params({"run_id": "run-0"}), 0, 10)[0]
    assert names(shared) == ["task-4", "task-2", "task-0"]  # three dags' run-0, newest first
    arrivals.cell_of = NoWalk(arrivals.cell_of)
    assert arrivals.page(TaskQuery.from_params({"run_id": "once"}), 0, 10)[0] == [only]
    assert arrivals.page(TaskQuery.from_params({"run_id": "never"}), 0, 10) == ([], False)


operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["put", "recovered", "forget"]), st.integers(0, 11)),
        st.tuples(st.sampled_from(["recovery_completed", "sync"]), st.just(0)),
    ),
    max_size=40,
)


@given(operations)
@example([("recovered", 6), ("recovered", 0), ("recovery_completed", 0)])  # one run, reordered
@example([("put", 0), ("put", 6), ("forget", 0), ("forget", 6)])  # a run emptied
def test_each_runs_keys_follow_the_listings_order_through_any_changes(
    steps: list[tuple[str, int]],
) -> None:
    table: dict[bytes, TaskState] = {}
    arrivals = Arrivals(table.get)
    for action, n in steps:
        state = state_of(n)
        key = state_key(state["key"])
        if action in ("put", "recovered"):
            table[key] = state
            getattr(arrivals, action)(key, state)
        elif action == "forget":
            table.pop(key, None)
            arrivals.forget(key)
        elif action == "recovery_completed":
            arrivals.recovery_completed()
        else:
            arrivals.sync(table.items(), len(table))
    arrivals.sync(table.items(), len(table))  # what every read does first
    assert {k for keys in arrivals.runs.values() for k in keys} == set(table)
    assert all(arrivals.runs.values())  # a run with no tries left is dropped
    everything, _ = arrivals.page(TaskQuery(), 0, 100)
    for dag, run in {(s["key"]["dag_id"], s["key"]["run_id"]) for s in table.values()}:
        same_run = [s for s in everything if (s["key"]["dag_id"], s["key"]["run_id"]) == (dag, run)]
        assert arrivals.page(run_query(dag, run), 0, 100)[0] == same_run
        any_dag = [s for s in everything if s["key"]["run_id"] == run]
        assert arrivals.page(TaskQuery.from_params({"run_id": run}), 0, 100)[0] == any_dag
