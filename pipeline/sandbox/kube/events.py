"""core/v1 Events as the scheduler and kubelet record them, so `kubectl describe pod` shows them.

An event repeated for the same object (same reason, message and source, e.g. a BackOff on
every restart) is counted on one Event, as client-go's event correlator does, instead of
stored again. The store keeps the newest `limit` events; older ones go, as their TTL would
remove them on a cluster.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import OrderedDict
from typing import Literal

from .pods import rfc3339
from .status import ApiError, JsonObj
from .store import Key, PodStore

EventType = Literal["Normal", "Warning"]
KUBELET = "kubelet"
SCHEDULER = "default-scheduler"


class EventRecorder:
    """Records events about pods into an event store of their own."""

    def __init__(self, store: PodStore, node: str, limit: int = 5_000) -> None:
        self.store = store
        self._node = node
        self._limit = limit
        self._by_series: OrderedDict[tuple[str, ...], Key] = OrderedDict()
        self._last_ns = 0

    def record(
        self,
        pod: JsonObj,
        reason: str,
        message: str,
        event_type: EventType = "Normal",
        *,
        component: str = KUBELET,
        container: str | None = None,
    ) -> JsonObj:
        meta = pod["metadata"]
        field_path = f"spec.containers{{{container}}}" if container else None
        series = (meta["uid"], reason, message, component, field_path or "")
        now = rfc3339()
        existing = self._by_series.get(series)
        if existing is not None:
            try:
                event = self.store.get(existing)
                self._by_series.move_to_end(series)
                repeated = {**event, "count": event.get("count", 1) + 1, "lastTimestamp": now}
                return self.store.replace(repeated)
            except ApiError:
                del self._by_series[series]  # deleted through the API
        event = self._new_event(pod, reason, message, event_type, component, field_path, now)
        stored = self.store.create(event)
        self._by_series[series] = (meta["namespace"], stored["metadata"]["name"])
        self._trim()
        return stored

    def _new_event(
        self,
        pod: JsonObj,
        reason: str,
        message: str,
        event_type: EventType,
        component: str,
        field_path: str | None,
        now: str,
    ) -> JsonObj:
        meta = pod["metadata"]
        involved: JsonObj = {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": "v1",
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        source: JsonObj = {"component": component}
        if component == KUBELET:
            source["host"] = self._node
        return {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {
                "name": f"{meta['name']}.{self._next_stamp():x}",
                "namespace": meta["namespace"],
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": event_type,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": self._node if component == KUBELET else "",
        }

    def _next_stamp(self) -> int:
        """Nanoseconds, strictly increasing, so event names never collide."""
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    def _trim(self) -> None:
        while len(self._by_series) > self._limit:
            _, key = self._by_series.popitem(last=False)
            with contextlib.suppress(ApiError):  # already deleted through the API
                self.store.remove(key)
