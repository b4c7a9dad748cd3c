"""The pod store: one resourceVersion counter, indexes, a bounded event history, listeners.

Stored pods are never mutated: every write stores a new dict, so the history and any list
response can share objects safely. Each write bumps the cluster resourceVersion by exactly
one and records exactly one event, which makes the history addressable by arithmetic.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import orjson

from .selectors import LabelRequirement, PodSelector
from .status import JsonObj, already_exists, conflict, expired, not_found

Key = tuple[str, str]
Listener = Callable[["Event"], None]
_B = TypeVar("_B")


@dataclass(slots=True)
class Event:
    """A stored change; `prev` lets watchers with selectors see objects enter and leave."""

    type: str
    obj: JsonObj
    prev: JsonObj | None
    rv: int
    _lines: dict[str, bytes] = field(default_factory=dict)

    def line(self, event_type: str) -> bytes:
        """The newline-terminated watch frame, encoded once per type however many watch."""
        cached = self._lines.get(event_type)
        if cached is None:
            cached = orjson.dumps({"type": event_type, "object": self.obj}) + b"\n"
            self._lines[event_type] = cached
        return cached


def pod_key(pod: JsonObj) -> Key:
    """(namespace, name); a cluster-scoped object's namespace is ""."""
    return pod["metadata"].get("namespace", ""), pod["metadata"]["name"]


def with_rv(pod: JsonObj, rv: int) -> JsonObj:
    return {**pod, "metadata": {**pod["metadata"], "resourceVersion": str(rv)}}


class PodStore:
    # An empty cluster still has a revision; clients treat "0" as "any", so never hand it out.
    FIRST_RV = 1

    def __init__(self, history_size: int = 10_000, resource: str = "pods") -> None:
        self.resource = resource  # the plural that errors name
        self.rv = self.FIRST_RV
        self._pods: dict[Key, JsonObj] = {}
        self._by_namespace: dict[str, dict[str, JsonObj]] = {}
        self._by_label: dict[tuple[str, str], set[Key]] = {}
        self._by_label_key: dict[str, set[Key]] = {}
        self._by_phase: dict[str, set[Key]] = {}
        self._history: deque[Event] = deque(maxlen=max(history_size, 1))
        self.compacted_rv = self.FIRST_RV
        self._listeners: list[Listener] = []

    def __len__(self) -> int:
        return len(self._pods)

    def __contains__(self, key: Key) -> bool:
        return key in self._pods

    def get(self, key: Key) -> JsonObj:
        pod = self._pods.get(key)
        if pod is None:
            raise not_found(key[1], self.resource)
        return pod

    def find(self, key: Key) -> JsonObj | None:
        return self._pods.get(key)

    def create(self, pod: JsonObj) -> JsonObj:
        key = pod_key(pod)
        self.require_absent(key)
        return self._write("ADDED", key, pod, None)

    def require_absent(self, key: Key) -> None:
        """409 AlreadyExists when `key` is taken (a create, or a dry run of one, checks this)."""
        if key in self._pods:
            raise already_exists(key[1], self.resource)

    def replace(self, pod: JsonObj, expected_rv: str | None = None) -> JsonObj:
        """Store a new version; `expected_rv` is the optimistic-concurrency precondition."""
        key = pod_key(pod)
        old = self.get(key)
        if expected_rv and expected_rv != old["metadata"]["resourceVersion"]:
            raise conflict(key[1], self.resource)
        return self._write("MODIFIED", key, pod, old)

    def mutate(self, key: Key, change: Callable[[JsonObj], JsonObj]) -> JsonObj:
        """Replace a pod with `change(current)`; the simulated kubelet writes through this."""
        return self.replace(change(self.get(key)))

    def remove(self, key: Key) -> JsonObj:
        old = self.get(key)
        self._unindex(key, old)
        del self._pods[key]
        namespace = self._by_namespace[key[0]]
        del namespace[key[1]]
        if not namespace:
            del self._by_namespace[key[0]]
        self.rv += 1
        gone = with_rv(old, self.rv)
        self._record(Event("DELETED", gone, old, self.rv))
        return gone

    def select(self, namespace: str | None, selector: PodSelector) -> list[JsonObj]:
        """Matching pods in key order, narrowed through the indexes before any filtering."""
        candidates = self._candidates(namespace, selector)
        if candidates is None:
            pods: Iterator[JsonObj] = self._scan(namespace)
        else:
            keys = sorted(k for k in candidates if namespace is None or k[0] == namespace)
            pods = (self._pods[k] for k in keys)
        return [p for p in pods if selector.matches(p)]

    def events_after(self, rv: int) -> Iterator[Event]:
        """Events newer than `rv`; 410 Expired when some were already compacted away."""
        if rv < self.compacted_rv:
            raise expired(f"too old resource version: {rv} ({self.compacted_rv})")
        start = max(rv - self.compacted_rv, 0)
        return itertools.islice(self._history, start, None)

    def snapshot_at(self, rv: int) -> dict[Key, JsonObj]:
        """The state as of `rv`, rebuilt by undoing newer history (resourceVersionMatch=Exact)."""
        events = list(self.events_after(rv))
        state = dict(self._pods)
        for event in reversed(events):
            key = pod_key(event.obj)
            if event.prev is None:
                del state[key]
            else:
                state[key] = event.prev
        return dict(sorted(state.items()))

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` synchronously on every event; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _write(self, event_type: str, key: Key, pod: JsonObj, old: JsonObj | None) -> JsonObj:
        self.rv += 1
        stored = with_rv(pod, self.rv)
        if old is not None:
            self._unindex(key, old)
        self._pods[key] = stored
        self._by_namespace.setdefault(key[0], {})[key[1]] = stored
        self._index(key, stored)
        self._record(Event(event_type, stored, old, self.rv))
        return stored

    def _record(self, event: Event) -> None:
        if len(self._history) == self._history.maxlen:
            self.compacted_rv = self._history[0].rv
        self._history.append(event)
        for listener in list(self._listeners):
            listener(event)

    def _scan(self, namespace: str | None) -> Iterator[JsonObj]:
        if namespace is not None:
            pods = self._by_namespace.get(namespace, {})
            return (pods[name] for name in sorted(pods))
        return (self._pods[k] for k in sorted(self._pods))

    def _candidates(self, namespace: str | None, selector: PodSelector) -> set[Key] | None:
        sets = [self._label_candidates(r) for r in selector.labels]
        name = selector.field_equals("metadata.name")
        if name is not None:
            named = {(namespace, name)} & self._pods.keys() if namespace else self._named(name)
            sets.append(named)
        phase = selector.field_equals("status.phase")
        if phase is not None:
            sets.append(self._by_phase.get(phase, set()))
        narrowing = sorted((s for s in sets if s is not None), key=len)
        if not narrowing:
            return None
        return narrowing[0].intersection(*narrowing[1:])

    def _label_candidates(self, requirement: LabelRequirement) -> set[Key] | None:
        if requirement.op == "exists":
            return self._by_label_key.get(requirement.key, set())
        if requirement.op in ("=", "in"):
            found: set[Key] = set()
            for value in requirement.values:
                found |= self._by_label.get((requirement.key, value), set())
            return found
        return None

    def _named(self, name: str) -> set[Key]:
        return {(ns, name) for ns, pods in self._by_namespace.items() if name in pods}

    def _index(self, key: Key, pod: JsonObj) -> None:
        for label, value in (pod["metadata"].get("labels") or {}).items():
            self._by_label.setdefault((label, value), set()).add(key)
            self._by_label_key.setdefault(label, set()).add(key)
        self._by_phase.setdefault(_phase(pod), set()).add(key)

    def _unindex(self, key: Key, pod: JsonObj) -> None:
        for label, value in (pod["metadata"].get("labels") or {}).items():
            _discard(self._by_label, (label, value), key)
            _discard(self._by_label_key, label, key)
        _discard(self._by_phase, _phase(pod), key)


def _phase(pod: JsonObj) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _discard(index: dict[_B, set[Key]], bucket: _B, key: Key) -> None:
    keys = index.get(bucket)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[bucket]
