"""Watch streaming: newline-delimited JSON events, resumable by resourceVersion.

As apiserver: no resourceVersion (or "0") starts with synthetic ADDED events for what exists;
a resourceVersion replays only later events from the bounded history, or answers an ERROR
event carrying 410 Expired when that history was compacted. A selector turns a MODIFIED
into ADDED or DELETED when the object enters or leaves it. The stream ends at
`timeoutSeconds`, after a last BOOKMARK when the client allows bookmarks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from .faults import Faults
from .query import flag
from .selectors import PodSelector
from .status import ApiError, JsonObj, bad_request
from .store import Event, PodStore

AsTable = Callable[[JsonObj, bool], JsonObj]  # (object, with column definitions) -> Table

DEFAULT_TIMEOUT_SECONDS = 1800  # apiserver's --min-request-timeout


@dataclass(frozen=True)
class WatchRequest:
    namespace: str | None
    selector: PodSelector
    resource_version: str | None
    timeout_seconds: float
    bookmarks: bool

    @classmethod
    def from_query(
        cls, namespace: str | None, selector: PodSelector, query: dict[str, str]
    ) -> WatchRequest:
        try:
            timeout = float(query.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)
        except ValueError:
            raise bad_request("timeoutSeconds must be an integer") from None
        return cls(
            namespace=namespace,
            selector=selector,
            resource_version=query.get("resourceVersion") or None,
            timeout_seconds=timeout,
            bookmarks=flag(query, "allowWatchBookmarks"),
        )


class WatchStream:
    """One client's watch: subscribed to the store from the moment it is created."""

    def __init__(
        self,
        store: PodStore,
        faults: Faults,
        watch: WatchRequest,
        bookmark_interval: float,
        as_table: AsTable | None = None,
    ) -> None:
        self._store = store
        self._as_table = as_table  # Table watches: column definitions in the first event only
        self._headers_due = True
        self._watch = watch
        self._bookmark_interval = bookmark_interval
        self._drop_after = faults.config.watch_drop_after_events
        self._sent = 0
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        # Backlog and subscription are taken together, with no await between them.
        self._backlog = self._initial_frames(faults)
        self._unsubscribe = store.add_listener(self._queue.put_nowait)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(request)
            if await self._send(response, self._backlog):
                await self._follow(response)
            await response.write_eof()
        except ConnectionResetError:
            pass
        finally:
            self._unsubscribe()
        return response

    def close(self) -> None:
        """End the stream (emulator shutdown), as apiserver does when it stops."""
        self._queue.put_nowait(None)

    def _initial_frames(self, faults: Faults) -> list[bytes]:
        rv = self._watch.resource_version
        if faults.take_expiry():
            return [_error_frame(ApiError(410, "Expired", "too old resource version"))]
        if rv is None or rv == "0":
            pods = self._store.select(self._watch.namespace, self._watch.selector)
            return [self._encode("ADDED", p, None) for p in pods]
        try:
            events = self._store.events_after(_parse_rv(rv))
            return [f for f in map(self._frame, events) if f is not None]
        except ApiError as error:
            if error.code != 410:
                raise
            return [_error_frame(error)]

    async def _follow(self, response: web.StreamResponse) -> None:
        deadline = time.monotonic() + self._watch.timeout_seconds
        while (left := deadline - time.monotonic()) > 0:
            wait = min(left, self._bookmark_interval) if self._watch.bookmarks else left
            try:
                first = await asyncio.wait_for(self._queue.get(), wait)
            except TimeoutError:
                if self._watch.bookmarks and deadline > time.monotonic():  # the last one follows
                    await response.write(self._bookmark())
                continue
            events = [first, *(self._queue.get_nowait() for _ in range(self._queue.qsize()))]
            frames = [f for e in events if e is not None and (f := self._frame(e))]
            if not await self._send(response, frames) or None in events:
                return
        if self._watch.bookmarks:
            await response.write(self._bookmark())

    async def _send(self, response: web.StreamResponse, frames: list[bytes]) -> bool:
        """Write frames; False once the stream must end (error sent, or drop fault hit)."""
        if self._drop_after is not None:
            frames = frames[: max(self._drop_after - self._sent, 0)]
        if frames:
            await response.write(b"".join(frames))
        self._sent += len(frames)
        ended = bool(frames) and frames[-1].startswith(b'{"type":"ERROR"')
        dropped = self._drop_after is not None and self._sent >= self._drop_after
        return not (ended or dropped)

    def _frame(self, event: Event) -> bytes | None:
        watch = self._watch
        if watch.namespace is not None and event.obj["metadata"]["namespace"] != watch.namespace:
            return None
        if not watch.selector.labels and not watch.selector.fields:
            return self._encode(event.type, event.obj, event)
        now = event.type != "DELETED" and watch.selector.matches(event.obj)
        before = event.prev is not None and watch.selector.matches(event.prev)
        if event.type == "DELETED":
            return self._encode("DELETED", event.obj, event) if before else None
        if now:
            return self._encode("MODIFIED" if before else "ADDED", event.obj, event)
        return self._encode("DELETED", event.obj, event) if before else None

    def _encode(self, event_type: str, obj: JsonObj, event: Event | None) -> bytes:
        """One frame; the stored event's cached line unless the client asked for Tables."""
        if self._as_table is not None:
            obj = self._as_table(obj, self._headers_due)
            self._headers_due = False
        elif event is not None:
            return event.line(event_type)
        return orjson.dumps({"type": event_type, "object": obj}) + b"\n"

    def _bookmark(self) -> bytes:
        obj = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self._store.rv)},
        }
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"


def _parse_rv(text: str) -> int:
    if not text.isdigit():
        raise bad_request(f"invalid resource version: {text!r}")
    return int(text)


def _error_frame(error: ApiError) -> bytes:
    return orjson.dumps({"type": "ERROR", "object": error.status()}) + b"\n"
