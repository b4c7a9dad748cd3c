"""The watcher's edge to Kubernetes: list, watch and delete pods through the official client.

The client is synchronous, so calls run in threads. A watch runs in its own thread and
hands frames to the event loop through a queue; stopping shuts its socket down (the
client's `Watch.stop`), so a stop never waits for the next frame. Pods stay the API's JSON
dicts (`_preload_content=False`, and a watch that does not deserialize), which is what
the translation reads and what a checkpoint stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import orjson
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from pipeline.config import KubeSettings
from pipeline.kube import client_configuration
from pipeline.pods import TRY_LABEL
from pipeline.runtime import next_unless_stopped
from pipeline.watcher.watch_loop import (
    Frames,
    Listing,
    NotAllowed,
    Pod,
    WatchGone,
    WatchUnavailable,
)

_T = TypeVar("_T")
_RETRIABLE = frozenset({408, 429, 500, 502, 503, 504})
_CONNECT_TIMEOUT_S = 10.0
_BATCH_MAX = 500  # frames handed over at once, at most
_OPENED: Final[Pod] = {}  # queued when the watch request is answered, before any frame
_DELETE_CHUNK = 50  # tries per delete-collection call: its selector stays a few kB of URL
_ENDED = "status.phase!=Pending,status.phase!=Running,status.phase!=Unknown"


def core_v1(kube: KubeSettings) -> client.CoreV1Api:
    """A CoreV1Api from the kubeconfig in settings, or the in-cluster service account."""
    return client.CoreV1Api(client.ApiClient(client_configuration(kube)))


class _RawWatch(watch.Watch):  # type: ignore[misc]
    """The client's watch (410 handling, socket shutdown on stop) without model objects, its
    frames parsed by orjson (each is a whole pod: the stdlib's parser cost a tenth of the
    watcher's CPU)."""

    def get_return_type(self, func: Any) -> None:
        return None

    def unmarshal_event(self, data: str, return_type: Any) -> dict[str, Any] | None:
        try:
            frame = orjson.loads(data) if data and not data.isspace() else None
        except orjson.JSONDecodeError:
            return None
        if not isinstance(frame, dict):
            return None
        frame["raw_object"] = frame.get("object")
        return frame


@dataclass
class PodApi:
    """The pods of one namespace that match one label selector."""

    core: client.CoreV1Api
    namespace: str
    selector: str
    request_timeout_s: float = 30.0
    watch_timeout_s: int = 300
    page_size: int = 500

    @property
    def server(self) -> str:
        return str(self.core.api_client.configuration.host)

    async def list(
        self,
        *,
        field_selector: str | None = None,
        limit: int | None = None,
        resume: str | None = None,
    ) -> Listing:
        """All matching pods (paged), or one page of `limit` (from a `resume` token)."""
        return await asyncio.to_thread(self._list, field_selector, limit, resume)

    def _list(self, field_selector: str | None, limit: int | None, token: str | None) -> Listing:
        pods: list[Pod] = []
        while True:
            response = _call(
                self.core.list_namespaced_pod,
                self.namespace,
                label_selector=self.selector,
                field_selector=field_selector,
                limit=limit or self.page_size,
                _continue=token,
                _preload_content=False,
                _request_timeout=self.request_timeout_s,
            )
            body = orjson.loads(response.data)  # type: ignore[attr-defined]
            pods.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if limit is not None or not token:
                return Listing(pods, str(body["metadata"]["resourceVersion"]), token)

    async def delete(self, name: str, uid: str) -> bool:
        """Delete one pod, only if it is still the one with `uid`; False if already gone."""
        try:
            await asyncio.to_thread(self._delete, name, uid)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or a newer pod now has the name
                return False
            raise
        return True

    async def delete_ended(self, tries: Sequence[str]) -> set[str]:
        """Delete the ended (Succeeded or Failed) pods of these tries, by their TRY_LABEL
        values, in a call per `_DELETE_CHUNK` tries; the names of the pods deleted.
        NotAllowed when the API refuses delete-collection (an RBAC without the verb)."""
        try:
            return await asyncio.to_thread(self._delete_ended, tries)
        except ApiException as exc:
            if exc.status in (403, 405):
                raise NotAllowed(f"{exc.status} {exc.reason}") from None
            raise

    def _delete_ended(self, tries: Sequence[str]) -> set[str]:
        deleted: set[str] = set()
        for start in range(0, len(tries), _DELETE_CHUNK):
            chunk = tries[start : start + _DELETE_CHUNK]
            response = _call(
                self.core.delete_collection_namespaced_pod,
                self.namespace,
                label_selector=f"{self.selector},{TRY_LABEL} in ({','.join(chunk)})",
                field_selector=_ENDED,
                _preload_content=False,
                _request_timeout=self.request_timeout_s,
            )
            items = orjson.loads(response.data).get("items") or []  # type: ignore[attr-defined]
            deleted.update(item["metadata"]["name"] for item in items)
        return deleted

    def _delete(self, name: str, uid: str) -> None:
        # raw: the deleted pod comes back, and making a V1Pod of it costs more than the call
        response = _call(
            self.core.delete_namespaced_pod,
            name,
            self.namespace,
            body={"preconditions": {"uid": uid}},
            _preload_content=False,
            _request_timeout=self.request_timeout_s,
        )
        try:
            _ = response.data  # type: ignore[attr-defined]  # read whole: the connection is reused
        finally:
            response.release_conn()  # type: ignore[attr-defined]

    async def watch(self, resource_version: str, stopping: asyncio.Event) -> AsyncIterator[Frames]:
        """Frames from `resource_version` on, until the server ends the stream or `stopping`."""
        loop = asyncio.get_running_loop()
        frames: asyncio.Queue[Pod | BaseException | None] = asyncio.Queue()
        stream = _RawWatch()  # type: ignore[no-untyped-call]

        @functools.wraps(self.core.list_namespaced_pod)
        def open_watch(*args: Any, **kwargs: Any) -> Any:
            response = self.core.list_namespaced_pod(*args, **kwargs)  # its headers are in
            loop.call_soon_threadsafe(frames.put_nowait, _OPENED)
            return response

        def pump() -> None:
            try:
                for frame in stream.stream(  # type: ignore[no-untyped-call]
                    open_watch,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.watch_timeout_s,
                    _request_timeout=(_CONNECT_TIMEOUT_S, self.watch_timeout_s + 30.0),
                ):
                    if frame is not None:  # a blank or unparsable line, not the stream's end
                        loop.call_soon_threadsafe(frames.put_nowait, frame)
                loop.call_soon_threadsafe(frames.put_nowait, None)
            except BaseException as exc:  # handed to the loop, which decides
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(frames.put_nowait, exc)

        threading.Thread(target=pump, name=f"watch-{self.namespace}", daemon=True).start()
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while True:
                item = await next_unless_stopped(frames, stop)
                if item is _OPENED:
                    yield []  # the server took the watch: nothing has changed since
                    continue
                batch: list[Pod] = []
                while item is not None and not isinstance(item, BaseException):
                    batch.append({"type": item["type"], "object": item["raw_object"]})
                    if len(batch) >= _BATCH_MAX or frames.empty():
                        break
                    item = frames.get_nowait()
                if batch:
                    yield batch
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise _classify(item) from item
        finally:
            stream.stop()  # type: ignore[no-untyped-call]
            stop.cancel()


def _call(method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Call the client, turning 410 into WatchGone and transient failures into WatchUnavailable."""
    try:
        return method(*args, **kwargs)
    except BaseException as exc:
        raise _classify(exc) from exc


def _classify(exc: BaseException) -> BaseException:
    original = exc  # typed, whether or not the installed kubernetes client has types
    if isinstance(exc, ApiException):
        if exc.status == 410:
            return WatchGone(str(exc.reason))
        if exc.status in _RETRIABLE:
            return WatchUnavailable(f"{exc.status} {exc.reason}")
        return original
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return WatchUnavailable(f"{type(exc).__name__}: {exc}")
    return original
