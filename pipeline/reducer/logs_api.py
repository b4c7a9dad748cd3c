"""`GET /tasks/{dag}/{task}/{run}/{map_index}/{try_number}/logs?tail=N&follow=1`: task output.

Where the text comes from, in order:
- a running pod: the Kubernetes API (`read_namespaced_pod_log`, followed when asked);
- a running Celery command: the worker's live capture in the result backend's Redis,
  polled while following;
- a finished try: its TaskLog on the logs topic, found through the `log` index entry the
  reducer keeps in the task's state (partition and offset) and fetched on demand, so no
  log text is held in memory; a finished pod not yet captured is still read from the API.

Text is served as `text/plain` with `nosniff`, exactly as captured: it is never interpreted.
404 when there is no log (yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiokafka import TopicPartition
from faust.web import View
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException

from pipeline.kafka import make_consumer, started
from pipeline.kube import client_configuration
from pipeline.messages import InvalidMessage, State, TaskKey
from pipeline.podlogs import PodLogs, PodLogUnavailable
from pipeline.reducer.cancel_api import json_answer, path_key
from pipeline.reducer.fold import LogRef, TaskState, is_terminal, state_key
from pipeline.reducer.owner import NoOwner, forward, owner_url
from pipeline.tasklogs import TaskLog, capture_key, decode_task_log, tail

if TYPE_CHECKING:
    from pipeline.reducer.app import Reducer

log = logging.getLogger(__name__)

LOGS_PATH = "/tasks/{dag}/{task}/{run}/{map_index}/{try_number}/logs"
FETCH_TIMEOUT_S = 15.0
POLL_S = 0.5
TEXT_HEADERS = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}


class NoLog(Exception):
    pass


class LogSources:
    """The three places a log can be read from, opened lazily (a deployment may lack one)."""

    def __init__(self, reducer: Reducer) -> None:
        self.reducer = reducer
        self.settings = reducer.settings
        self._pods: PodLogs | None = None
        self._pods_lock = asyncio.Lock()
        self._redis: Any = None

    async def pods(self) -> PodLogs:
        """The Kubernetes client, built in a thread: importing it takes seconds (thousands of
        model classes), which must not stall the event loop serving everything else."""
        async with self._pods_lock:
            if self._pods is None:
                self._pods = await asyncio.to_thread(self._build_pods)
        return self._pods

    def _build_pods(self) -> PodLogs:
        from kubernetes import client

        kube = self.settings.kube
        try:
            configuration = client_configuration(kube)
        except (ConfigException, OSError) as exc:
            raise NoLog(f"no Kubernetes API configured: {exc}") from None
        core = client.CoreV1Api(client.ApiClient(configuration))
        return PodLogs(core, kube.namespace, kube.request_timeout_s)

    def redis(self) -> Any:
        url = self.settings.celery.result_backend.get_secret_value()
        if not url.startswith(("redis://", "rediss://", "redis+socket://")):
            raise NoLog("live Celery output needs a Redis result backend")
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(url, socket_timeout=5)
        return self._redis

    async def stored(self, ref: LogRef) -> TaskLog:
        """The TaskLog record at the index entry's partition and offset."""
        settings = self.settings
        tp = TopicPartition(settings.topic.logs, ref["partition"])
        consumer = make_consumer(
            settings.kafka, group_id=None, client_id="reducer-logs", fetch_max_wait_ms=50
        )
        async with started(consumer, settings.kafka), asyncio.timeout(FETCH_TIMEOUT_S):
            consumer.assign([tp])
            consumer.seek(tp, ref["offset"])
            while True:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
                for record in batch.get(tp, []):
                    if record.offset >= ref["offset"]:
                        try:
                            return decode_task_log(record.value or b"")
                        except InvalidMessage as exc:
                            raise NoLog(f"stored log unreadable: {exc.message}") from None

    async def celery_capture(self, task_id: str) -> bytes | None:
        client = self.redis()
        data: bytes | None = await asyncio.to_thread(client.get, capture_key(task_id))
        return data


def _live_pod(state: TaskState) -> str | None:
    if state.get("executor") == "kubernetes" and state.get("pod_name"):
        return state["pod_name"]
    return None


def _live_celery(state: TaskState) -> str | None:
    if state.get("executor") == "celery" and state.get("celery_task_id"):
        return state["celery_task_id"]
    return None


def register(reducer: Reducer) -> None:
    sources = LogSources(reducer)

    def current(key: TaskKey) -> TaskState | None:
        found: TaskState | None = reducer.state_of(state_key(key.to_wire()))
        return found

    async def stored_text(state: TaskState, lines: int | None) -> str | None:
        ref = state.get("log")
        if ref is None:
            return None
        record = await sources.stored(ref)
        return tail(record["text"], lines)

    async def celery_follow(key: TaskKey, task_id: str, lines: int | None) -> AsyncIterator[bytes]:
        """Poll the worker's capture until the try finishes; yield what is new each time."""
        sent = 0
        first = True
        while True:
            state = current(key)
            finished = state is None or is_terminal(state["state"])
            data = await sources.celery_capture(task_id) or b""
            if first:
                text = tail(data.decode(errors="replace"), lines).encode()
                sent, first = len(data), False
                if text:
                    yield text
            elif len(data) > sent:
                yield data[sent:]
                sent = len(data)
            if finished:
                return
            await asyncio.sleep(POLL_S)

    async def stream(request: web.Request, chunks: AsyncIterator[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers=TEXT_HEADERS)
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    def text(body: str | bytes) -> web.Response:
        data = body.encode() if isinstance(body, str) else body
        return web.Response(body=data, headers=TEXT_HEADERS)

    async def answer(
        request: web.Request, key: TaskKey, lines: int | None, follow: bool
    ) -> web.StreamResponse:
        state = current(key)
        if state is None:
            raise NoLog(f"unknown task {key}")
        finished = is_terminal(state["state"])
        if finished and (stored := await stored_text(state, lines)) is not None:
            return text(stored)
        if (pod := _live_pod(state)) is not None and state["state"] != State.QUEUED:
            try:
                pods = await sources.pods()
                if follow and not finished:
                    return await stream(request, pods.follow(pod, lines))
                return text(await pods.read(pod, lines))
            except (PodLogUnavailable, ApiException) as exc:
                log.info("pod log unavailable: %s", exc)
        if (task_id := _live_celery(state)) is not None and not finished:
            if follow:
                return await stream(request, celery_follow(key, task_id, lines))
            if (data := await sources.celery_capture(task_id)) is not None:
                return text(tail(data.decode(errors="replace"), lines))
        if (stored := await stored_text(state, lines)) is not None:
            return text(stored)
        raise NoLog(f"no log for {key} (state {state['state']})")

    async def logs(request: web.Request, match: dict[str, str]) -> web.StreamResponse:
        try:
            key = path_key(match)
            lines = int(request.query["tail"]) if request.query.get("tail") else None
        except ValueError:
            return json_answer({"error": "map_index, try_number and tail must be integers"}, 400)
        follow = request.query.get("follow") in ("1", "true")
        try:
            if (dest := owner_url(reducer, key)) is not None:
                return await forward(reducer, dest, request)
        except NoOwner as exc:
            return json_answer({"error": str(exc)}, 503)
        try:
            return await answer(request, key, lines, follow)
        except NoLog as exc:
            return json_answer({"error": str(exc)}, 404)
        except TimeoutError:
            return json_answer({"error": "the logs topic did not answer in time"}, 503)

    async def warm_up() -> None:
        """Build the Kubernetes client at start, so the first pod log is served at once."""
        with contextlib.suppress(NoLog):
            await sources.pods()

    reducer.app.task(warm_up)

    class LogsView(View):
        async def get(self, request: Any, **match: str) -> Any:
            return await logs(request, match)

    reducer.app.page(LOGS_PATH, name="task_logs")(LogsView)
