"""List, then watch from the list's resourceVersion; relist on 410 Gone; reconnect with backoff.

The one loop every watch in the watcher runs (kopf's habit). It knows nothing of tasks or
Kafka: a `PodSource` lists and streams raw pod documents, a `WatchHandler` is told what
was listed, what changed and how far the stream has come. The handler must make each
change durable before it returns: the loop resumes from the last version it handed over.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.runtime import sleep_unless_stopped
from pipeline.watcher import metrics

log = logging.getLogger(__name__)

Pod = dict[str, Any]
Frames = list[Pod]  # a batch of watch frames, in stream order


class WatchGone(Exception):
    """410 Gone: the resourceVersion is older than the API's history; list again."""


class WatchUnavailable(Exception):
    """The API could not be reached or answered an error worth retrying after a pause."""


class NotAllowed(Exception):
    """The API refuses this kind of call for good (403 by RBAC, 405): do without it."""


@dataclass(frozen=True)
class Listing:
    pods: list[Pod]
    resource_version: str
    more: str | None = None  # continue token when only one page was asked for


class PodSource(Protocol):
    namespace: str

    async def list(self) -> Listing: ...

    def watch(self, resource_version: str, stopping: asyncio.Event) -> AsyncIterator[Frames]:
        """Raw watch frames ({"type", "object"}) until the server ends the stream or stop.

        Frames come in batches, in stream order: whatever arrived since the last batch, so a
        handler can make many changes durable with one round trip instead of one each. An
        empty batch says the server answered the watch: on a quiet cluster a resumed watch
        may hear nothing else until its first bookmark, a minute later.
        """
        ...


class WatchHandler(Protocol):
    async def listed(self, pods: list[Pod], resource_version: str) -> None:
        """A full list: the handler compares it with what it knew (adoption, 410 recovery)."""

    async def changed(self, changes: Sequence[tuple[str, Pod]]) -> None:
        """ADDED / MODIFIED / DELETED pods, in stream order; durable when this returns."""

    async def progressed(self, resource_version: str) -> None:
        """Everything up to `resource_version` was handed over (a bookmark or an event)."""


@dataclass
class Backoff:
    """Exponential delay with full jitter, reset once a stream delivers again."""

    initial_s: float = 0.5
    maximum_s: float = 30.0
    _attempt: int = field(default=0, init=False)

    def next_delay(self) -> float:
        ceiling = min(self.maximum_s, self.initial_s * 2**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


async def list_then_watch(
    source: PodSource,
    handler: WatchHandler,
    stopping: asyncio.Event,
    *,
    resource_version: str | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Keep `handler` in step with the pods of `source` until `stopping` is set.

    Starts from `resource_version` (a checkpoint) when given, else from a fresh list.
    """
    backoff = backoff or Backoff()
    namespace = source.namespace
    rv = resource_version
    heard = time.monotonic()
    metrics.LAG.labels(namespace).set_function(lambda: time.monotonic() - heard)
    while not stopping.is_set():
        try:
            if rv is None:
                listing = await source.list()
                await handler.listed(listing.pods, listing.resource_version)
                rv = listing.resource_version
                heard = time.monotonic()
            frames = 0
            async for batch in source.watch(rv, stopping):
                if not batch:  # the watch is open: everything up to rv is in hand
                    await handler.progressed(rv)
                rv = await _dispatch(batch, handler) or rv
                heard = time.monotonic()
                frames += len(batch)
                backoff.reset()
            why = "stopped" if stopping.is_set() else "timeout" if frames else "dropped"
            if why == "dropped":  # ended before saying anything: do not spin on a bad server
                await sleep_unless_stopped(stopping, backoff.next_delay())
        except WatchGone:
            log.info(
                "resourceVersion %s expired; listing again", rv, extra={"namespace": namespace}
            )
            metrics.GONE.labels(namespace).inc()
            rv, why = None, "gone"
        except WatchUnavailable as exc:
            delay = backoff.next_delay()
            log.warning("watch interrupted (%s); retrying in %.2fs", exc, delay,
                        extra={"namespace": namespace})  # fmt: skip
            why = "error"
            await sleep_unless_stopped(stopping, delay)
        if why != "stopped":
            metrics.WATCH_RESTARTS.labels(namespace, why).inc()


async def _dispatch(frames: Sequence[Pod], handler: WatchHandler) -> str | None:
    """Hand a batch of frames to the handler; the resourceVersion to resume from after it.

    Changes before an ERROR frame are handed over (and progressed) before it is raised.
    """
    changes: list[tuple[str, Pod]] = []
    rv: str | None = None
    error: Exception | None = None
    for frame in frames:
        kind = frame.get("type")
        obj = frame.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            message = obj.get("message")
            error = (
                WatchGone(message or "Gone")
                if code == 410
                else (WatchUnavailable(f"watch error {code}: {message}"))
            )
            break
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            changes.append((kind, obj))
        elif kind != "BOOKMARK":
            log.warning("unknown watch frame type %r ignored", kind)
            continue
        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
    if changes:
        await handler.changed(changes)
    if rv:
        await handler.progressed(rv)
    if error is not None:
        raise error
    return rv
