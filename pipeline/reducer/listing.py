"""Task listings, newest first, a page at a time, without sorting the table on every request.

`Arrivals` keeps this replica's task keys in the order they first arrived (a dict keeps its
insertion order, and updating a key keeps its place), each with the `executor:state` cell it
is counted under, so "newest first" is a reverse walk that stops once a page is full: a
first page costs about `limit` steps whatever the table holds, and page N costs the states
before it. States are read from the table (`lookup`) only for the keys a walk reaches, and
a filter on state or executor skips the others by their cell without reading them. After a
recovery or a rebalance the order is rebuilt once from each state's `first_seen`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.messages import parse_time
from pipeline.reducer.fold import TaskState

EXACT_FILTERS = ("state", "dag_id", "task_id", "run_id", "executor")


class QueryError(ValueError):
    """A listing query that cannot be answered (the API's 400)."""


def key_text(state: TaskState) -> str:
    """The task key as people write it: dag/task/run/map/try (what text search looks in)."""
    key = state["key"]
    return (
        f"{key['dag_id']}/{key['task_id']}/{key['run_id']}/{key['map_index']}/{key['try_number']}"
    )


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """Exact filters, a case-insensitive text search on the key, and a first-seen range."""

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

    def matches(self, state: TaskState) -> bool:
        key: Mapping[str, Any] = state["key"]
        for name, wanted in self.exact:
            value = state.get(name) if name in ("state", "executor") else key.get(name)
            if str(value) != wanted:
                return False
        if self.text and self.text not in key_text(state).lower():
            return False
        if self.since or self.until:
            seen = parse_time(state.get("first_seen") or state["updated_at"])
            if (self.since and seen < self.since) or (self.until and seen > self.until):
                return False
        return True


def cell(state: TaskState) -> str:
    """The `executor:state` a state is counted under (one shared string per cell)."""
    return sys.intern(f"{state.get('executor', 'none')}:{state['state']}")


Lookup = Callable[[bytes], TaskState | None]


class Arrivals:
    """This replica's task keys by first arrival, and their counts by executor and state.

    `put` on every write keeps both current, so neither a listing nor the counts scan.
    """

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.cell_of: dict[bytes, str] = {}
        self.cells: Counter[str] = Counter()
        self.stale = True

    def put(self, key: bytes, state: TaskState) -> None:
        old = self.cell_of.get(key)
        if old is not None:
            self.cells[old] -= 1
        new = self.cell_of[key] = cell(state)
        self.cells[new] += 1

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
        """Rebuild from the table when it changed under us (recovery, rebalance)."""
        if not self.stale and len(self.cell_of) == size:
            return
        held = [(k, s) for k, s in table if s is not None]
        held.sort(key=lambda item: item[1].get("first_seen") or item[1]["updated_at"])
        self.cell_of = {k: cell(s) for k, s in held}
        self.cells = Counter(self.cell_of.values())
        self.stale = False

    def keys_in(self, state: str) -> list[bytes]:
        """The keys whose state is `state`, read from their cells alone."""
        return [key for key, name in self.cell_of.items() if name.endswith(f":{state}")]

    def newest_first(self, query: TaskQuery | None = None) -> Iterator[TaskState]:
        """States newest first; with a query, only keys whose cell can match are read."""
        wanted = dict(query.exact) if query is not None else {}
        executor, state = wanted.get("executor"), wanted.get("state")
        for key in reversed(self.cell_of):
            if executor is not None or state is not None:
                cell_executor, cell_state = self.cell_of[key].split(":", 1)
                if state is not None and cell_state != state:
                    continue
                if executor is not None and cell_executor not in ("none", executor):
                    continue  # ("none": no executor, which `matches` judges)
            found = self.lookup(key)
            if found is not None:
                yield found

    def page(self, query: TaskQuery, offset: int, limit: int) -> tuple[list[TaskState], bool]:
        """States `offset`..`offset + limit` of the matches, and whether more match."""
        found: list[TaskState] = []
        skipped = 0
        for state in self.newest_first(query):
            if not query.matches(state):
                continue
            if skipped < offset:
                skipped += 1
                continue
            if len(found) == limit:
                return found, True
            found.append(state)
        return found, False
