"""The dashboard's pages: overview, tasks, task detail, dead letters, stages.

Each handler gathers data (reducer API, the DLQ tail, the stage probes) and renders a Jinja2
template with autoescaping on, so every value from a message is text, never markup. Tables
page on the server and take their filters from the URL, so any view can be linked.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiokafka.errors import KafkaError

from pipeline import dlq
from pipeline.client import ApiError, UnknownTask
from pipeline.messages import TERMINAL_STATES, State, TaskKey
from pipeline.ui import charts
from pipeline.ui.context import API_ERRORS, UiContext
from pipeline.ui.stages import group_lags, probe_all, stage_groups

PAGE_SIZE = 50
WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(days=1)}
TASK_FILTERS = ("dag_id", "run_id", "state", "executor", "q")
STATES = [s.value for s in State]
TERMINAL = {s.value for s in TERMINAL_STATES}
LOG_LINES = 500
STOP_POLLING = 286
"""htmx stops polling an element whose request is answered with this status."""


def page_number(request: web.Request) -> int:
    try:
        return max(int(request.query.get("page", "1")), 1)
    except ValueError:
        return 1


def task_params(query: dict[str, str], page: int, now: datetime) -> dict[str, str]:
    """The API query for a tasks page: the URL's filters, the window as `since`, the page."""
    params = {name: query[name] for name in TASK_FILTERS if query.get(name)}
    if window := WINDOWS.get(query.get("window", "")):
        params["since"] = (now - window).isoformat()
    for name in ("since", "until"):
        if query.get(name):
            params[name] = query[name]
    params["offset"] = str((page - 1) * PAGE_SIZE)
    params["limit"] = str(PAGE_SIZE)
    return params


def with_page(query: dict[str, str], page: int) -> str:
    return urlencode({**{k: v for k, v in query.items() if k != "page" and v}, "page": page})


def task_link(key: dict[str, Any]) -> str:
    wanted = {n: key[n] for n in ("dag_id", "task_id", "run_id", "map_index")}
    return "/task?" + urlencode(wanted)


def overview_fragments(ctx: UiContext, snapshot: dict[str, Any]) -> list[tuple[str, str]]:
    """What the live feed pushes: the counts, the chart data, the API banner, a tasks tick."""
    banner = ctx.render("_banner.html", api_error=snapshot.get("api_error"))
    if "stats" not in snapshot:
        return [("api", banner)]
    stats, timeline = snapshot["stats"], snapshot["timeline"]
    counts = ctx.render(
        "_counts.html",
        stats=stats,
        cells=cells(stats),
        states=STATES,
        rates=charts.window_rates(timeline["seconds"], timeline["now"]),
        letters=ctx.letters,
    )
    series = charts.chart_data(timeline["seconds"], timeline["now"])
    version = str(sum(stats.get("outcomes", {}).values()))
    return [("api", banner), ("counts", counts), ("series", ctx.json(series)), ("tasks", version)]


def cells(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """executor -> state -> count, from the flat `executor:state` counts."""
    table: dict[str, dict[str, int]] = {}
    for name, count in stats.get("by_executor_state", {}).items():
        executor, state = name.split(":", 1)
        table.setdefault(executor, {})[state] = count
    return dict(sorted(table.items()))


async def overview(request: web.Request) -> web.Response:
    ctx = UiContext.of(request)
    snapshot = await ctx.feed.snapshot()
    fragments = dict(overview_fragments(ctx, snapshot))
    return ctx.page("overview.html", request, fragments=fragments)


async def tasks_data(ctx: UiContext, request: web.Request) -> dict[str, Any]:
    query = dict(request.query)
    page = page_number(request)
    params = task_params(query, page, datetime.now(UTC))
    found: dict[str, Any] = {"tasks": [], "more": False}
    error = None
    try:
        found = await ctx.api.page(**params)
    except ApiError as exc:
        error = f"bad filter: {exc}" if exc.status == 400 else str(exc)
    except API_ERRORS as exc:
        error = str(exc) or type(exc).__name__
    return {
        "query": query,
        "tasks": found["tasks"],
        "more": found["more"],
        "page": page,
        "error": error,
        "prev_url": f"/tasks?{with_page(query, page - 1)}" if page > 1 else None,
        "next_url": f"/tasks?{with_page(query, page + 1)}" if found["more"] else None,
        "rows_url": f"/tasks/rows?{urlencode(query)}",
        "states": STATES,
        "windows": list(WINDOWS),
        "task_link": task_link,
    }


async def tasks(request: web.Request) -> web.Response:
    ctx = UiContext.of(request)
    return ctx.page("tasks.html", request, **await tasks_data(ctx, request))


async def task_rows(request: web.Request) -> web.Response:
    ctx = UiContext.of(request)
    return ctx.fragment("_rows.html", **await tasks_data(ctx, request))


def key_from(query: Mapping[str, str], with_try: bool = False) -> TaskKey:
    """The task key in a page's query (or a form); HTTPBadRequest when it is incomplete."""
    try:
        return TaskKey(
            query["dag_id"],
            query["task_id"],
            query["run_id"],
            int(query.get("map_index", "-1")),
            int(query["try_number"]) if with_try else 1,
        )
    except (KeyError, ValueError):
        message = "dag_id, task_id and run_id (and integer map_index, try_number)"
        raise web.HTTPBadRequest(text=message) from None


async def task_detail(request: web.Request) -> web.Response:
    ctx = UiContext.of(request)
    key = key_from(request.query)
    error, tries = None, []
    try:
        tries = await ctx.api.tries(key)
    except API_ERRORS as exc:
        error = str(exc) or type(exc).__name__
    status = 404 if not tries and error is None else 200
    return ctx.page(
        "task.html",
        request,
        key=key,
        tries=tries[::-1],
        error=error,
        status=status,
        page_url=request.path_qs,
        terminal=TERMINAL,
        try_url=lambda t, part="try": f"/task/{part}?" + urlencode(t["key"]),
        done=request.query.get("done"),
        token_needed=ctx.token is not None,
    )


async def task_try(request: web.Request) -> web.Response:
    """One try's state, facts and history, for the task page's live refresh."""
    ctx = UiContext.of(request)
    key = key_from(request.query, with_try=True)
    try:
        state = await ctx.api.task(key)
    except API_ERRORS as exc:
        return ctx.fragment("_log.html", text="", error=str(exc) or type(exc).__name__)
    if state is None:
        raise web.HTTPNotFound(text=f"no such try: {key}")
    return ctx.fragment("_try.html", t=state, terminal=TERMINAL)  # ended: drops its cancel form


async def task_log(request: web.Request) -> web.Response:
    """The newest lines of one try's log, as an escaped fragment (never raw text as HTML).

    The page polls this while the try runs; once it has ended the answer is 286, which
    tells htmx to stop, and a finished try without a kept log leaves the lines last shown.
    """
    ctx = UiContext.of(request)
    key = key_from(request.query, with_try=True)
    text, error = "", None
    try:
        state = await ctx.api.task(key)  # None when unknown; the log raises UnknownTask
        text = await ctx.api.logs(key, tail=LOG_LINES)
    except UnknownTask:
        error = "no log yet"
    except API_ERRORS as exc:
        return ctx.fragment("_log.html", text="", error=str(exc) or type(exc).__name__)
    ended = state is None or state["state"] in TERMINAL
    response = ctx.fragment("_log.html", text=text, error=error)
    if ended:
        response.set_status(STOP_POLLING)
        if error is not None:
            response.headers["HX-Reswap"] = "none"
    return response


async def dead_letters(request: web.Request) -> web.Response:
    ctx = UiContext.of(request)
    reason = request.query.get("reason") or None
    page = page_number(request)
    shown, more = ctx.letters.newest(reason, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    query = dict(request.query)
    rows = [
        {
            "stored": s,
            "place": f"{s.partition}:{s.offset}",
            "preview": dlq.preview(s.original[1], 120),
            "key": s.letter.get("task_key"),
            "redriven": (s.partition, s.offset) in ctx.letters.redriven,
        }
        for s in shown
    ]
    return ctx.page(
        "deadletters.html",
        request,
        rows=rows,
        reason=reason,
        reasons=dlq.REASONS,
        letters=ctx.letters,
        prev_url=f"/dead-letters?{with_page(query, page - 1)}" if page > 1 else None,
        next_url=f"/dead-letters?{with_page(query, page + 1)}" if more else None,
        done=request.query.get("done"),
        token_needed=ctx.token is not None,
    )


async def stages(request: web.Request) -> web.Response:
    ctx = UiContext.of(request)
    groups = stage_groups(ctx.settings)
    replicas = await probe_all(ctx.session, ctx.settings.ui.stages)
    try:
        lags = await group_lags(ctx.settings, groups)
        lag_error = None
    except (OSError, KafkaError, TimeoutError) as exc:
        lags, lag_error = {}, str(exc) or type(exc).__name__
    names = sorted(set(replicas) | set(groups))
    return ctx.page(
        "stages.html", request, names=names, replicas=replicas, lags=lags, lag_error=lag_error
    )
