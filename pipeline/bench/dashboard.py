"""`pipeline bench dashboard`: the tasks page with N (default 100k) tasks in the state.

Baseline: what `GET /tasks` did before the listing index, on the same N states: filter
every state and sort them all by update time, then cut a page. Subject: the reducer's
`Arrivals.page` (newest first by arrival, stopping once the page is full) over the states
as the table stores them (encoded, decoded when read) plus the dashboard's rendering of
that page (the real templates). Both are timed per request in one process, so the ratio is
requests per second of subject over baseline. Also reported: the subject's latency for a
deep page, a filter that matches nothing (the worst case: a full walk), a text search, one
run's tries (the query Airflow's executor makes for each run it tracks, answered from the
listing's index by run), the `/stats` summary, and the page's HTML and JSON payload sizes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from pipeline.bench import BenchResult
from pipeline.messages import State, TaskKey, make_event
from pipeline.reducer.fold import TaskState, fold_event, state_key
from pipeline.reducer.listing import Arrivals, TaskQuery
from pipeline.reducer.store import EncodedStates
from pipeline.ui import pages
from pipeline.ui.context import templates

DEFAULT_N = 100_000
REPEAT_S = 1.0
STATES = (State.QUEUED, State.RUNNING, State.SUCCESS, State.FAILED)


def states(n: int) -> list[TaskState]:
    out = []
    for i in range(n):
        key = TaskKey(f"dag-{i % 50}", f"task-{i}", f"run-{i // 1000}", -1, 1)
        event = make_event(key, "bench", STATES[i % len(STATES)], executor="celery")
        out.append(fold_event(None, event, 50)[0])
    return out


def per_request_s(request: Callable[[], Any]) -> float:
    """Mean CPU seconds per call, over at least REPEAT_S of CPU (steady on a busy machine)."""
    calls, began = 0, time.process_time()
    while (elapsed := time.process_time() - began) < REPEAT_S or calls < 3:
        request()
        calls += 1
    return elapsed / calls


def sort_everything(held: list[TaskState], query: TaskQuery, limit: int) -> list[TaskState]:
    """The listing before the index: every state filtered and sorted, per request."""
    found = [s for s in held if query.matches(s)]
    return sorted(found, key=lambda s: s["updated_at"], reverse=True)[:limit]


async def run(n: int) -> BenchResult:
    held = states(n)
    stored = EncodedStates()
    arrivals = Arrivals(stored.get)
    for state in held:
        key = state_key(state["key"])
        stored[key] = state
        arrivals.put(key, state)
    arrivals.stale = False
    env = templates()
    everything, limit = TaskQuery(), pages.PAGE_SIZE
    one_run = TaskQuery((("dag_id", "dag-3"), ("run_id", "run-0")))

    def page(query: TaskQuery, offset: int = 0) -> str:
        found, more = arrivals.page(query, offset, limit)
        return str(env.get_template("_rows.html").render(
            tasks=found, more=more, page=1, error=None, prev_url=None, next_url=None,
            task_link=pages.task_link,
        ))  # fmt: skip

    baseline_s = per_request_s(lambda: sort_everything(held, everything, limit))
    subject_s = per_request_s(lambda: page(everything))
    first, _ = arrivals.page(everything, 0, limit)
    timings_ms = {
        "page_1_ms": subject_s * 1000,
        "page_1000_ms": per_request_s(lambda: page(everything, 999 * limit)) * 1000,
        "no_match_filter_ms": per_request_s(lambda: page(TaskQuery((("state", "x"),)))) * 1000,
        "text_search_ms": per_request_s(lambda: page(TaskQuery(text="task-99999"))) * 1000,
        "run_query_ms": per_request_s(lambda: arrivals.page(one_run, 0, n)) * 1000,
        "stats_ms": per_request_s(arrivals.summary) * 1000,
        "baseline_sort_ms": baseline_s * 1000,
    }
    return BenchResult(
        name="dashboard",
        baseline="filter and sort every state per request (the old listing)",
        subject="Arrivals.page + rendering the tasks table",
        baseline_per_s=1 / baseline_s,
        subject_per_s=1 / subject_s,
        params={"n": n, "page_size": limit},
        extra={
            **{k: round(v, 3) for k, v in timings_ms.items()},
            "page_html_bytes": len(page(everything).encode()),
            "page_json_bytes": len(orjson.dumps({"tasks": first, "more": True})),
        },
    )
