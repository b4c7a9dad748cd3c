"""The query API, served by the reducer's faust web server on `reducer.api_port`.

    GET /tasks/{dag}/{task}/{run}[/{map}[/{try}]]   every try of a task (or one), with history
    GET /tasks?state=&dag_id=&task_id=&run_id=&executor=&limit=
    GET /stats      counts by state and executor, fold outcomes, throughput
    GET /healthz    GET /readyz    GET /metrics   (also on the runtime port, for probes)

With N replicas each holds its own partitions. A single-task query is forwarded to the
replica owning the task's partition (faust's table routing, by the partition key); list and
stats queries fan out to every replica in the assignment and merge (`?scope=local` answers
from this replica only, which is also what the fan-out asks each peer).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
import prometheus_client
from faust.exceptions import SameNode
from faust.web import Request, Response, View

from pipeline import runtime
from pipeline.messages import TaskKey
from pipeline.reducer.fold import TaskState, state_key

if TYPE_CHECKING:
    from pipeline.reducer.app import Reducer

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
LIST_FILTERS = ("state", "dag_id", "task_id", "run_id", "executor")
TASK_PATHS = (
    "/tasks/{dag}/{task}/{run}",
    "/tasks/{dag}/{task}/{run}/{map_index}",
    "/tasks/{dag}/{task}/{run}/{map_index}/{try_number}",
)


def matches(state: TaskState, filters: dict[str, str]) -> bool:
    key = state["key"]
    values = {**key, "state": state["state"], "executor": state.get("executor")}
    return all(str(values.get(name)) == wanted for name, wanted in filters.items())


def newest_first(states: list[TaskState], limit: int) -> list[TaskState]:
    return sorted(states, key=lambda s: s["updated_at"], reverse=True)[:limit]


def summarize(states: list[TaskState]) -> dict[str, Any]:
    by_state = Counter(s["state"] for s in states)
    by_executor = Counter(s.get("executor", "unknown") for s in states)
    return {"tasks": len(states), "by_state": dict(by_state), "by_executor": dict(by_executor)}


def task_prefix(dag: str, task: str, run: str, map_index: int) -> bytes:
    """State keys of every try of one task instance start with this."""
    return state_key(TaskKey(dag, task, run, map_index, 0).to_wire())[:-2]


def register(reducer: Reducer) -> None:
    """Add the API's views to the reducer's faust web server."""
    app = reducer.app

    async def peers_json(path: str, query: dict[str, str]) -> list[Any]:
        """Ask every other replica for its local answer."""
        own = str(app.conf.canonical_url).rstrip("/")
        urls = {str(u).rstrip("/") for u in app.router.tables_metadata()} - {own}
        params = urlencode({**query, "scope": "local"})

        async def fetch(url: str) -> Any:
            async with app.http_client.get(f"{url}{path}?{params}") as response:
                response.raise_for_status()
                return orjson.loads(await response.read())

        return list(await asyncio.gather(*(fetch(u) for u in sorted(urls))))

    async def task(view: View, request: Request, **match: str) -> Response:
        try:
            map_index = int(match.get("map_index", -1))
            try_number = int(match["try_number"]) if "try_number" in match else None
        except ValueError:
            return view.error(400, "map_index and try_number must be integers")
        owner = TaskKey(match["dag"], match["task"], match["run"], map_index)
        try:
            return await app.router.route_req(
                reducer.table.name, owner.partition_key, view.web, request
            )
        except SameNode:
            pass
        prefix = task_prefix(owner.dag_id, owner.task_id, owner.run_id, map_index)
        found = sorted(
            (s for k, s in reducer.table.items() if k.startswith(prefix) and s is not None),
            key=lambda s: s["key"]["try_number"],
        )
        if try_number is not None:
            found = [s for s in found if s["key"]["try_number"] == try_number]
        if not found:
            return view.error(404, f"no state for {owner.partition_key.decode()}")
        return view.json({"tasks": found})

    for depth, path in enumerate(TASK_PATHS):
        app.page(path, name=f"task_{depth}")(task)

    @app.page("/tasks")
    async def tasks(view: View, request: Request) -> Response:
        query = dict(request.query)
        try:
            limit = min(int(query.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
        except ValueError:
            return view.error(400, "limit must be an integer")
        filters = {k: v for k, v in query.items() if k in LIST_FILTERS and v}
        found = [s for s in reducer.states() if matches(s, filters)]
        if query.get("scope") != "local":
            for answer in await peers_json("/tasks", query):
                found.extend(answer["tasks"])
        return view.json({"tasks": newest_first(found, limit)})

    @app.page("/stats")
    async def stats(view: View, request: Request) -> Response:
        answers = [
            {
                **summarize(reducer.states()),
                "outcomes": dict(reducer.outcomes),
                "events_per_s": reducer.throughput.per_second(),
            }
        ]
        if request.query.get("scope") != "local":
            answers.extend(await peers_json("/stats", {}))
        return view.json(merge_stats(answers))

    @app.page("/healthz")
    async def healthz(view: View, request: Request) -> Response:
        return view.json({"ok": True, "recovering": bool(app.in_recovery)})

    @app.page("/readyz")
    async def readyz(view: View, request: Request) -> Response:
        return view.json({"ready": reducer.ready}, status=200 if reducer.ready else 503)

    async def serve_probes() -> None:
        """The probes every stage serves on the runtime port, so one probe config fits all."""
        settings = reducer.settings.runtime
        probes = runtime.health_app(reducer)
        runner = await runtime.serve_http(probes, settings.http_host, settings.http_port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    app.task(serve_probes)

    @app.page("/metrics")
    async def metrics(view: View, request: Request) -> Response:
        return view.bytes(
            prometheus_client.generate_latest(),
            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
        )


def merge_stats(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up the per-replica stats answers."""
    merged: dict[str, Any] = {"tasks": 0, "events_per_s": 0.0, "replicas": len(answers)}
    for name in ("by_state", "by_executor", "outcomes"):
        total: Counter[str] = Counter()
        for answer in answers:
            total.update(answer.get(name, {}))
        merged[name] = dict(total)
    for answer in answers:
        merged["tasks"] += answer["tasks"]
        merged["events_per_s"] += answer["events_per_s"]
    return merged
