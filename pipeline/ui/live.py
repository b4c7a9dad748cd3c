"""Live updates: one poll of the reducer API per interval, pushed to every open page by SSE.

However many browsers are open, the API sees one `/stats` and one `/timeline` per interval
(and none when no page is open). Each page gets server-rendered fragments (escaped by the
templates) plus the chart data as JSON. A slow browser's queue is bounded: it misses
updates rather than growing memory, and the next update supersedes the missed ones anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pipeline.client import ApiError, ApiUnavailable, AsyncPipelineClient

log = logging.getLogger(__name__)

Snapshot = dict[str, Any]
Renderer = Callable[[Snapshot], list[tuple[str, str]]]


def sse_message(event: str, data: str) -> bytes:
    """One SSE message; every line of `data` gets its own `data:` field, as the format needs."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n".encode()


class Feed:
    """Polls while anyone listens; renders each snapshot once and fans it out."""

    def __init__(self, api: AsyncPipelineClient, render: Renderer, interval_s: float) -> None:
        self.api = api
        self.render = render
        self.interval_s = interval_s
        self.listeners: set[asyncio.Queue[bytes]] = set()
        self.latest: dict[str, bytes] = {}
        self.wake = asyncio.Event()

    async def snapshot(self) -> Snapshot:
        try:
            stats, timeline = await asyncio.gather(self.api.stats(), self.api.timeline(300))
        except (ApiUnavailable, ApiError, TimeoutError) as exc:
            return {"api_error": str(exc), "at": time.time()}
        return {"stats": stats, "timeline": timeline, "at": time.time()}

    async def run(self) -> None:
        while True:
            if not self.listeners:
                self.wake.clear()
                await self.wake.wait()
            try:
                fresh = {e: sse_message(e, d) for e, d in self.render(await self.snapshot())}
            except Exception:  # a render bug must not end live updates for everyone
                log.exception("live update failed")
                fresh = {}
            changed = [m for e, m in fresh.items() if self.latest.get(e) != m]
            self.latest.update(fresh)
            for queue in list(self.listeners):
                for message in changed:
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait(message)
            await asyncio.sleep(self.interval_s)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[bytes]]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        for message in self.latest.values():  # a new page is current at once
            queue.put_nowait(message)
        self.listeners.add(queue)
        self.wake.set()
        try:
            yield queue
        finally:
            self.listeners.discard(queue)
