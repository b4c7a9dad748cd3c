"""Task listings, newest first, a page at a time, without sorting the table on every request.

`Arrivals` keeps this replica's states in the order they first arrived (a dict keeps its
insertion order, and updating a key keeps its place), so "newest first" is a reverse walk
that stops once a page is full: a first page costs about `limit` steps whatever the table
holds, and page N costs the states before it. Only a filter matching few states walks far.
After a recovery or a rebalance the order is rebuilt once from each state's `first_seen`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
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
    """The `executor:state` a state is counted under."""
    return f"{state.get('executor', 'none')}:{state['state']}"


class Arrivals:
    """This replica's states by first arrival, and their counts by executor and state.

    `put` on every write keeps both current, so neither a listing nor the counts scan.
    """

    def __init__(self) -> None:
        self.states: dict[bytes, TaskState] = {}
        self.cells: Counter[str] = Counter()
        self.stale = True

    def put(self, key: bytes, state: TaskState) -> None:
        old = self.states.get(key)
        if old is not None:
            self.cells[cell(old)] -= 1
        self.cells[cell(state)] += 1
        self.states[key] = state

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
            "tasks": len(self.states),
            "by_state": dict(by_state),
            "by_executor": dict(by_executor),
            "by_executor_state": {name: n for name, n in self.cells.items() if n},
        }

    def sync(self, table: Iterable[tuple[bytes, TaskState | None]], size: int) -> None:
        """Rebuild from the table when it changed under us (recovery, rebalance)."""
        if not self.stale and len(self.states) == size:
            return
        held = [(k, s) for k, s in table if s is not None]
        held.sort(key=lambda item: item[1].get("first_seen") or item[1]["updated_at"])
        self.states = dict(held)
        self.cells = Counter(cell(s) for _, s in held)
        self.stale = False

    def newest_first(self) -> Iterator[TaskState]:
        return reversed(self.states.values())

    def page(self, query: TaskQuery, offset: int, limit: int) -> tuple[list[TaskState], bool]:
        """States `offset`..`offset + limit` of the matches, and whether more match."""
        found: list[TaskState] = []
        skipped = 0
        for state in self.newest_first():
            if not query.matches(state):
                continue
            if skipped < offset:
                skipped += 1
                continue
            if len(found) == limit:
                return found, True
            found.append(state)
        return found, False
