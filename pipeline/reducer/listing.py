"""Task listings, newest first, a page at a time, without sorting the table on every request.

`Arrivals` keeps this replica's task keys in the order they first arrived (a dict keeps its
insertion order, and updating a key keeps its place), each with the `executor:state` cell it
is counted under, so "newest first" is a reverse walk that stops once a page is full: a
first page costs about `limit` steps whatever the table holds, and page N costs the states
before it. Every filter but a time range is decided from the key and its cell, so a walk
reads a state from the table (`lookup`, a decode) only to show it or to check its range.
After a recovery or a rebalance the order is rebuilt once from each state's `first_seen`.

A query for one run (a dag_id and a run_id: what Airflow's executor asks for every run it
tracks; or a run_id only one DAG has) walks that run's keys alone, kept in the same order per
run (`runs`), so its cost follows the run's size, not the table's.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pipeline.messages import parse_time
from pipeline.reducer.fold import TaskState

EXACT_FILTERS = ("state", "dag_id", "task_id", "run_id", "executor")


class QueryError(ValueError):
    """A listing query that cannot be answered (the API's 400)."""


KEY_POSITIONS = {"dag_id": 0, "task_id": 1, "run_id": 2}
"""Where a filter's field sits in a state key (the JSON array of the task key)."""

Run = tuple[str, str]
"""A DAG run: (dag_id, run_id)."""


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """Exact filters, a case-insensitive text search on the key, and a first-seen range.

    All but the range are decided by a state's key and its `executor:state` cell alone
    (`allows_cell`, `key_matcher`), so a listing reads a state only for a range or to show
    it; `matches` judges a decoded state the same way.
    """

    exact: tuple[tuple[str, str], ...] = ()
    text: str = ""
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TaskQuery:
        exact = tuple((n, params[n]) for n in EXACT_FILTERS if params.get(n))
        try:
            since = parse_time(params["since"]) if params.get("since") else None
            until = parse_time(params["until"]) if params.get("until") else None
        except ValueError:
            raise QueryError("since and until must be ISO-8601 timestamps") from None
        if (since and since.tzinfo is None) or (until and until.tzinfo is None):
            raise QueryError("since and until need a time zone (e.g. Z)")
        return cls(exact, params.get("q", "").strip().lower(), since, until)

    @property
    def needs_state(self) -> bool:
        return self.since is not None or self.until is not None

    def matches(self, state: TaskState) -> bool:
        key: Mapping[str, Any] = state["key"]
        for name, wanted in self.exact:
            value = state.get(name) if name in ("state", "executor") else key.get(name)
            if str(value) != wanted:
                return False
        if self.text and self.text not in key_text(key).lower():
            return False
        return self.matches_time(state)

    def allows_cell(self, cell_name: str) -> bool:
        """Whether a state counted under `cell_name` passes the state and executor filters."""
        executor, _, state = cell_name.partition(":")
        fields = {"state": state, "executor": None if executor == "none" else executor}
        return all(str(fields[n]) == wanted for n, wanted in self.exact if n in fields)

    def key_matcher(self) -> Callable[[bytes], bool] | None:
        """A test of a state key against the key filters and the text search; None when
        there are none (every key passes)."""
        wanted = [(KEY_POSITIONS[n], w) for n, w in self.exact if n in KEY_POSITIONS]
        text = self.text
        if not wanted and not text:
            return None

        def matches(key: bytes) -> bool:
            parts = orjson.loads(key)
            if any(str(parts[at]) != value for at, value in wanted):
                return False
            return not text or text in "/".join(map(str, parts)).lower()

        if wanted or not _plain(text):
            return matches
        needle = text.encode()
        # Plain text in a plain key (ASCII, nothing escaped) is in its JSON as typed, if at all.
        return lambda key: needle in key.lower() if _plain_key(key) else matches(key)

    def matches_time(self, state: TaskState) -> bool:
        if not self.needs_state:
            return True
        seen = parse_time(state.get("first_seen") or state["updated_at"])
        return not ((self.since and seen < self.since) or (self.until and seen > self.until))


def _plain(text: str) -> bool:
    """Text JSON writes as is, within one field of a key (no separator, quote or escape)."""
    return text.isascii() and not any(c in text for c in '/"\\,') and text.isprintable()


def _plain_key(key: bytes) -> bool:
    return key.isascii() and b"\\" not in key


def key_text(key: Mapping[str, Any]) -> str:
    """The task key as people write it: dag/task/run/map/try (what text search looks in)."""
    return (
        f"{key['dag_id']}/{key['task_id']}/{key['run_id']}/{key['map_index']}/{key['try_number']}"
    )


def cell(state: TaskState) -> str:
    """The `executor:state` a state is counted under (one shared string per cell)."""
    return sys.intern(f"{state.get('executor', 'none')}:{state['state']}")


Lookup = Callable[[bytes], TaskState | None]


def run_of(state: TaskState) -> Run:
    return str(state["key"]["dag_id"]), str(state["key"]["run_id"])


def run_of_key(key: bytes) -> Run:
    parts = orjson.loads(key)
    return str(parts[KEY_POSITIONS["dag_id"]]), str(parts[KEY_POSITIONS["run_id"]])


def arrived_at(state: TaskState) -> str:
    """When a try first arrived, as the listing orders it (ISO strings sort as times)."""
    return state.get("first_seen") or state["updated_at"]


class Arrivals:
    """This replica's task keys by first arrival, overall and per run, and their counts by
    executor and state.

    The store tells it of every change (`pipeline.reducer.store.Observer`), so neither a
    listing nor the counts scan, and nothing is decoded to keep them. Recovery brings states
    in changelog order; they are put in arrival order when it completes, from the arrival
    times it handed over. Only a recovery into a listing that already held states (a
    rebalance that brings partitions to a running replica) leaves it `stale`: the next read
    rebuilds it from the table, decoding every state once.
    """

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.cell_of: dict[bytes, str] = {}
        self.cells: Counter[str] = Counter()
        self.runs: dict[Run, dict[bytes, None]] = {}  # each run's keys, in `cell_of`'s order
        self.stale = False
        self._recovered: list[tuple[str, bytes]] = []  # (arrived_at, key) to order at the end

    def put(self, key: bytes, state: TaskState) -> None:
        old = self.cell_of.get(key)
        if old is not None:
            self.cells[old] -= 1
        else:
            self.runs.setdefault(run_of(state), {})[key] = None
        new = self.cell_of[key] = cell(state)
        self.cells[new] += 1

    def recovered(self, key: bytes, state: TaskState) -> None:
        """A state recovery read from the changelog."""
        if key not in self.cell_of:
            self._recovered.append((arrived_at(state), key))
        self.put(key, state)

    def recovery_completed(self) -> None:
        """Order what recovery brought by arrival, when it is all the listing holds."""
        recovered, self._recovered = self._recovered, []
        held = [(at, key) for at, key in recovered if key in self.cell_of]
        if len(held) != len(self.cell_of):
            self.stale = self.stale or bool(held)  # a rebuild still owed stays owed
            return
        held.sort()
        self.cell_of = {key: self.cell_of[key] for _, key in held}
        self._order_runs()

    def forget(self, key: bytes) -> None:
        if (old := self.cell_of.pop(key, None)) is not None:
            self.cells[old] -= 1
            run = run_of_key(key)
            keys = self.runs[run]
            del keys[key]
            if not keys:
                del self.runs[run]

    def _order_runs(self) -> None:
        """Put each run's keys in the order `cell_of` now holds them."""
        for keys in self.runs.values():
            keys.clear()
        for key in self.cell_of:
            self.runs[run_of_key(key)][key] = None

    def summary(self) -> dict[str, Any]:
        """The `/stats` counts: tasks, by state, by executor, and by `executor:state`."""
        by_state: Counter[str] = Counter()
        by_executor: Counter[str] = Counter()
        for name, count in self.cells.items():
            if count:
                executor, state = name.split(":", 1)
                by_state[state] += count
                by_executor[executor] += count
        return {
            "tasks": len(self.cell_of),
            "by_state": dict(by_state),
            "by_executor": dict(by_executor),
            "by_executor_state": {name: n for name, n in self.cells.items() if n},
        }

    def sync(self, table: Iterable[tuple[bytes, TaskState | None]], size: int) -> None:
        """Rebuild from the table when it is stale or its size says it changed unseen."""
        if not self.stale and len(self.cell_of) == size:
            return
        held = [(k, s) for k, s in table if s is not None]
        held.sort(key=lambda item: arrived_at(item[1]))
        self.cell_of = {k: cell(s) for k, s in held}
        self.cells = Counter(self.cell_of.values())
        self.runs = {}
        for key, state in held:
            self.runs.setdefault(run_of(state), {})[key] = None
        self.stale = False

    def keys_in(self, state: str) -> list[bytes]:
        """The keys whose state is `state`, read from their cells alone."""
        return [key for key, name in self.cell_of.items() if name.endswith(f":{state}")]

    def keys_of(self, run: Run) -> list[bytes]:
        """The keys of one run's tries, by arrival."""
        return list(self.runs.get(run, ()))

    def _newest_first(self, query: TaskQuery) -> Iterable[tuple[bytes, str]]:
        """Every key the query could match, with its cell: one run's, when it names a run
        that only one DAG has (several runs interleave only in the overall order)."""
        runs = self._runs_named(query)
        if runs is None or len(runs) > 1:
            return reversed(self.cell_of.items())
        keys = self.runs[runs[0]] if runs else {}
        return ((key, self.cell_of[key]) for key in reversed(keys))

    def _runs_named(self, query: TaskQuery) -> list[Run] | None:
        """The runs held that a query's run_id (and dag_id) name; None if it names none."""
        wanted = dict(query.exact)
        if (run_id := wanted.get("run_id")) is None:
            return None
        if (dag_id := wanted.get("dag_id")) is not None:
            return [(dag_id, run_id)] if (dag_id, run_id) in self.runs else []
        return [run for run in self.runs if run[1] == run_id]  # a walk of runs, not tries

    def page(self, query: TaskQuery, offset: int, limit: int) -> tuple[list[TaskState], bool]:
        """States `offset`..`offset + limit` of the matches, and whether more match; a state
        is read only when the query has a time range or it is on the page."""
        allowed = {name for name in self.cells if query.allows_cell(name)}
        key_matches = query.key_matcher()
        found: list[TaskState] = []
        skipped = 0
        for key, name in self._newest_first(query):
            if name not in allowed or (key_matches is not None and not key_matches(key)):
                continue
            state = self.lookup(key) if query.needs_state else None
            if query.needs_state and (state is None or not query.matches_time(state)):
                continue
            if skipped < offset:
                skipped += 1
                continue
            if len(found) == limit:
                return found, True
            if (state := state or self.lookup(key)) is not None:
                found.append(state)
        return found, False
