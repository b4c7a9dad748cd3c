"""`pipeline status`: task states from the reducer's query API, as a table (or JSON)."""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any, Final, get_args

import orjson
import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table

from pipeline.cli.common import CliError, console, one_of, settings
from pipeline.config import Settings
from pipeline.messages import State
from pipeline.routing import Target

STATES = tuple(s.value for s in State)
EXECUTORS = get_args(Target)

STATE_STYLE = {
    "success": "green",
    "failed": "red",
    "cancelled": "magenta",
    "dead_lettered": "red",
    "running": "cyan",
    "launched": "blue",
    "queued": "yellow",
    "submitted": "dim",
}


def api_url(config: Settings) -> str:
    return (config.reducer.api_url or f"http://127.0.0.1:{config.reducer.api_port}").rstrip("/")


def query_path(
    key: str | None,
    dag: str | None,
    run_id: str | None,
    state: str | None,
    limit: int,
    executor: str | None = None,
) -> str:
    """The API path answering a `status` invocation."""
    parts = [p for p in (key or "").split("/") if p]
    if len(parts) >= 3:
        if len(parts) > 5:
            raise CliError(f"key {key!r} has too many parts (DAG/TASK/RUN[/MAP[/TRY]])")
        return "/tasks/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)
    filters = {
        "dag_id": parts[0] if parts else dag,
        "task_id": parts[1] if len(parts) == 2 else None,
        "run_id": run_id,
        "state": state,
        "executor": executor,
    }
    query = {k: v for k, v in filters.items() if v} | {"limit": str(limit)}
    return "/tasks?" + urllib.parse.urlencode(query)


def fetch(base: str, path: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """GET a JSON answer; an unreachable API is a one-line CliError, 404 an empty answer."""
    try:
        with urllib.request.urlopen(base + path, timeout=timeout_s) as response:
            body: dict[str, Any] = orjson.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return {"tasks": []}
        raise CliError(f"reducer API at {base} answered {exc.code}: {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"cannot reach the reducer API at {base} ({reason}); is `pipeline run reducer` "
            "running? (set PIPELINE_REDUCER_API_URL)"
        ) from None


WRAPPING: Final = ("task", "reason")
"""The columns that give way on a narrow terminal: states, times and stage names never wrap."""
WIDE: Final = 110
"""Below this many columns the task table leaves out executor and last source."""


def when(timestamp: str) -> str:
    """A state's time to the second, as a table shows it (`--json` keeps it whole)."""
    return timestamp[:19].replace("T", " ")


def key_text(state: dict[str, Any]) -> str:
    k = state["key"]
    mapped = f"[{k['map_index']}]" if k["map_index"] >= 0 else ""
    return f"{k['dag_id']}.{k['task_id']}{mapped} @ {k['run_id']} #{k['try_number']}"


def render(tasks: list[dict[str, Any]], detail: bool, width: int) -> RenderableType:
    table = Table(title=f"{len(tasks)} task(s)", expand=False)
    wide = width >= WIDE
    columns = ("task", "state", "executor", "updated", "last source", "reason")
    for column in columns if wide else ("task", "state", "updated", "reason"):
        wraps = column in WRAPPING
        table.add_column(column, no_wrap=not wraps, min_width=12 if wraps else None)
    for t in tasks:
        style = STATE_STYLE.get(t["state"], "")
        last = t["history"][-1]["source"] if t["history"] else ""
        extra = f" (re-driven {t['redriven']})" if t.get("redriven") else ""
        state = f"[{style}]{t['state']}[/]{extra}"
        reason = t.get("reason") or ""
        if wide:
            row = [key_text(t), state, t.get("executor", ""), when(t["updated_at"]), last, reason]
        else:
            row = [key_text(t), state, when(t["updated_at"]), reason]
        table.add_row(*row)
    if not detail:
        return table
    return Group(table, *(history_table(t) for t in tasks))


def history_table(state: dict[str, Any]) -> Table:
    table = Table(title=f"history of {key_text(state)}", expand=False)
    for column in ("observed", "state", "source", "event", "reason"):
        table.add_column(column, overflow="fold", no_wrap=column not in WRAPPING)
    for step in state["history"]:
        table.add_row(
            when(step["observed_at"]), step["state"], step["source"], step["event_id"][:12],
            step.get("reason") or "",
        )  # fmt: skip
    if state.get("illegal_transitions"):
        table.caption = f"{state['illegal_transitions']} illegal transition(s) refused"
    return table


def status(
    ctx: typer.Context,
    key: Annotated[
        str | None, typer.Argument(help="DAG[/TASK[/RUN[/MAP[/TRY]]]]; omit for every task.")
    ] = None,
    dag: Annotated[str | None, typer.Option("--dag", help="Only this DAG.")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run id.")] = None,
    state: Annotated[
        str | None, typer.Option("--state", help=f"Only tasks in this state: {', '.join(STATES)}.")
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option("--executor", help=f"Only tasks of this executor: {', '.join(EXECUTORS)}."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 100,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Watch period, s.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Show task states as the reducer holds them (newest first)."""
    one_of(state, STATES, "state")
    one_of(executor, EXECUTORS, "executor")
    base = api_url(settings(ctx))
    path = query_path(key, dag, run_id, state, limit, executor)
    detail = path.startswith("/tasks/")
    if as_json:
        print(orjson.dumps(fetch(base, path)).decode())
        return
    if not watch:
        console.print(render(fetch(base, path)["tasks"], detail, console.width))
        return
    with Live(console=console, auto_refresh=False) as live, contextlib.suppress(KeyboardInterrupt):
        while True:
            live.update(render(fetch(base, path)["tasks"], detail, console.width), refresh=True)
            time.sleep(interval)
