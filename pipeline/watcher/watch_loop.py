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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.runtime import sleep_unless_stopped
from pipeline.watcher import metrics

log = logging.getLogger(__name__)

Pod = dict[str, Any]


class WatchGone(Exception):
    """410 Gone: the resourceVersion is older than the API's history; list again."""


class WatchUnavailable(Exception):
    """The API could not be reached or answered an error worth retrying after a pause."""


@dataclass(frozen=True)
class Listing:
    pods: list[Pod]
    resource_version: str
    more: str | None = None  # continue token when only one page was asked for


class PodSource(Protocol):
    namespace: str

    async def list(self) -> Listing: ...

    def watch(self, resource_version: str, stopping: asyncio.Event) -> AsyncIterator[Pod]:
        """Raw watch frames ({"type", "object"}) until the server ends the stream or stop."""
        ...


class WatchHandler(Protocol):
    async def listed(self, pods: list[Pod], resource_version: str) -> None:
        """A full list: the handler compares it with what it knew (adoption, 410 recovery)."""

    async def changed(self, kind: str, pod: Pod) -> None:
        """One ADDED / MODIFIED / DELETED pod."""

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
            async for frame in source.watch(rv, stopping):
                rv = await _dispatch(frame, handler) or rv
                heard = time.monotonic()
                frames += 1
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


async def _dispatch(frame: Pod, handler: WatchHandler) -> str | None:
    """Hand one frame to the handler; the resourceVersion to resume from after it."""
    kind = frame.get("type")
    obj = frame.get("object") or {}
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    if kind == "ERROR":
        code = obj.get("code")
        if code == 410:
            raise WatchGone(obj.get("message") or "Gone")
        raise WatchUnavailable(f"watch error {code}: {obj.get('message')}")
    if kind == "BOOKMARK":
        if rv:
            await handler.progressed(rv)
        return rv
    if kind in ("ADDED", "MODIFIED", "DELETED"):
        await handler.changed(kind, obj)
        if rv:
            await handler.progressed(rv)
        return rv
    log.warning("unknown watch frame type %r ignored", kind)
    return None
