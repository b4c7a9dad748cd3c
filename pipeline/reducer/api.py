"""The query API, served by the reducer's faust web server on `reducer.api_port`.

    GET /tasks/{dag}/{task}/{run}[/{map}[/{try}]]   every try of a task (or one), with history
    GET /tasks?state=&dag_id=&task_id=&run_id=&executor=&q=&since=&until=&offset=&limit=
                    newest first (by arrival), a page: {"tasks": [...], "more": bool}
    GET /stats      counts by state and executor, fold outcomes, throughput
    GET /timeline?seconds=N   per-second transitions and latency histograms (the dashboard)
    GET /healthz    GET /readyz    GET /metrics   (also on the runtime port, for probes)

With N replicas each holds its own partitions. A single-task query is forwarded to the
replica owning the task's partition (faust's table routing, by the partition key); list and
stats queries fan out to every replica in the assignment and merge (`?scope=local` answers
from this replica only, which is also what the fan-out asks each peer).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
import prometheus_client
from faust.exceptions import SameNode
from faust.web import Request, Response, View

from pipeline import runtime
from pipeline.messages import TaskKey
from pipeline.reducer import timeline
from pipeline.reducer.fold import TaskState, state_key
from pipeline.reducer.listing import QueryError, TaskQuery

if TYPE_CHECKING:
    from pipeline.reducer.app import Reducer

DEFAULT_LIMIT = 100
MAX_LIMIT = 100_000
TASK_PATHS = (
    "/tasks/{dag}/{task}/{run}",
    "/tasks/{dag}/{task}/{run}/{map_index}",
    "/tasks/{dag}/{task}/{run}/{map_index}/{try_number}",
)


def task_prefix(dag: str, task: str, run: str, map_index: int) -> bytes:
    """State keys of every try of one task instance start with this."""
    return state_key(TaskKey(dag, task, run, map_index, 0).to_wire())[:-2]


def every_try(reducer: Reducer, owner: TaskKey) -> list[TaskState]:
    """Every try of `owner`'s task instance this replica holds, by try number: a walk over
    its run's keys (the listing's index by run)."""
    prefix = task_prefix(owner.dag_id, owner.task_id, owner.run_id, owner.map_index)
    run_keys = reducer.newest().keys_of((owner.dag_id, owner.run_id))
    tries = (reducer.state_of(k) for k in run_keys if k.startswith(prefix))
    return sorted((s for s in tries if s is not None), key=lambda s: s["key"]["try_number"])


def register(reducer: Reducer) -> None:
    """Add the API's views to the reducer's faust web server."""
    app = reducer.app
    retention_s = reducer.settings.reducer.retention_s
    forgotten = (
        f" (or it finished over {retention_s:g} s ago: PIPELINE_REDUCER_RETENTION_S)"
        if retention_s
        else ""
    )

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
        if try_number is not None:  # one try: its own key, whatever the table holds
            one = reducer.state_of(state_key({**owner.to_wire(), "try_number": try_number}))
            found = [one] if one is not None else []
        else:
            found = every_try(reducer, owner)
        if not found:
            return view.error(404, f"no state for {owner.partition_key.decode()}{forgotten}")
        return view.json({"tasks": found})

    for depth, path in enumerate(TASK_PATHS):
        app.page(path, name=f"task_{depth}")(task)

    @app.page("/tasks")
    async def tasks(view: View, request: Request) -> Response:
        params = dict(request.query)
        try:
            limit = min(int(params.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
            offset = int(params.get("offset", 0))
            query = TaskQuery.from_params(params)
        except ValueError as exc:
            message = str(exc) if isinstance(exc, QueryError) else "offset and limit: integers"
            return view.error(400, message)
        if limit < 1 or offset < 0:
            return view.error(400, "limit must be positive and offset not negative")
        if params.get("scope") == "local":
            found, more = reducer.newest().page(query, offset, limit)
            return view.json({"tasks": found, "more": more})
        # Each replica's first offset+limit matches hold the merged page.
        found, more = reducer.newest().page(query, 0, offset + limit)
        peers = await peers_json("/tasks", {**params, "offset": "0", "limit": str(offset + limit)})
        if peers:
            for answer in peers:
                found.extend(answer["tasks"])
                more = more or answer["more"]
            found.sort(key=lambda s: s.get("first_seen") or s["updated_at"], reverse=True)
            more = more or len(found) > offset + limit
        return view.json({"tasks": found[offset : offset + limit], "more": more})

    @app.page("/timeline")
    async def timeline_view(view: View, request: Request) -> Response:
        try:
            seconds = int(request.query.get("seconds", 300))
        except ValueError:
            return view.error(400, "seconds must be an integer")
        now = time.time()
        answers = [reducer.timeline.to_json(now, seconds)]
        if request.query.get("scope") != "local":
            peers = await peers_json("/timeline", {"seconds": str(seconds)})
            answers.extend(answer["seconds"] for answer in peers)
        return view.json({"now": now, "seconds": timeline.merge(answers)})

    @app.page("/stats")
    async def stats(view: View, request: Request) -> Response:
        answers = [
            {
                **reducer.newest().summary(),
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
    for name in ("by_state", "by_executor", "by_executor_state", "outcomes"):
        total: Counter[str] = Counter()
        for answer in answers:
            total.update(answer.get(name, {}))
        merged[name] = dict(total)
    for answer in answers:
        merged["tasks"] += answer["tasks"]
        merged["events_per_s"] += answer["events_per_s"]
    return merged
