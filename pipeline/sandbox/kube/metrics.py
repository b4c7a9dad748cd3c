"""The resource metrics API (metrics.k8s.io/v1beta1) that `kubectl top` reads.

A cluster's metrics-server reports each running container's CPU rate and working memory,
and each node's, the rate over the time since its previous scrape (the `window`). Here a
process-mode container is its local process group, so its figures are real, from /proc: its
CPU since the previous read at least a second old (the first read: over its life so far) and
its resident memory. A simulated container uses nothing and says so (zero). The node reports
this machine: its busy CPU in the same way (from the emulator's start) and the memory in use.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

from aiohttp import web

from pipeline import procstat

from .collection import Admit, json_response
from .discovery import Resource
from .kubelet import NODE_NAME, Kubelet
from .pods import rfc3339
from .selectors import parse_selector
from .status import JsonObj, not_found
from .store import Key, PodStore

GROUP_VERSION = "metrics.k8s.io/v1beta1"
NODE_METRICS = Resource(
    "metrics.k8s.io", "v1beta1", "nodes", "", "NodeMetrics", ("get", "list"),
    namespaced=False, documented=False,
)  # fmt: skip
POD_METRICS = Resource(
    "metrics.k8s.io", "v1beta1", "pods", "", "PodMetrics", ("get", "list"), documented=False
)
RESOURCES = (NODE_METRICS, POD_METRICS)
BASE = f"/apis/{GROUP_VERSION}"


class MetricsApi:
    def __init__(self, kubelet: Kubelet, pods: PodStore, admit: Admit) -> None:
        self._kubelet = kubelet
        self._pods = pods
        self._admit = admit
        self._started = (time.monotonic(), procstat.machine_busy_s())
        self._rates = _Rates()

    def routes(self) -> list[web.RouteDef]:
        pods = BASE + "/namespaces/{namespace}/pods"
        return [
            web.get(BASE + "/nodes", self.list_nodes),
            web.get(BASE + "/nodes/{name}", self.get_node),
            web.get(BASE + "/pods", self.list_pods),
            web.get(pods, self.list_pods),
            web.get(pods + "/{name}", self.get_pod),
        ]

    async def list_nodes(self, request: web.Request) -> web.Response:
        await self._admit("list")
        return json_response(_listed("NodeMetricsList", [self._node()]))

    async def get_node(self, request: web.Request) -> web.Response:
        await self._admit("get")
        if request.match_info["name"] != NODE_NAME:
            raise not_found(request.match_info["name"], "nodes.metrics.k8s.io")
        return json_response(self._node())

    async def list_pods(self, request: web.Request) -> web.Response:
        await self._admit("list")
        selector = parse_selector(request.query.get("labelSelector"), None)
        pods = self._pods.select(request.match_info.get("namespace"), selector)
        found = [m for pod in pods if (m := self._pod(pod)) is not None]
        self._forget_ended()
        return json_response(_listed("PodMetricsList", found))

    async def get_pod(self, request: web.Request) -> web.Response:
        await self._admit("get")
        key = request.match_info["namespace"], request.match_info["name"]
        found = self._pod(self._pods.get(key))
        self._forget_ended()
        if found is None:  # as metrics-server: a pod with nothing running has no metrics
            raise not_found(key[1], "pods.metrics.k8s.io")
        return json_response(found)

    def _node(self) -> JsonObj:
        now, busy = time.monotonic(), procstat.machine_busy_s()
        cores, window = self._rates.rate(NODE_NAME, now, busy, self._started)
        usage = _usage(cores, procstat.machine_memory_used())
        return {**_meta("NodeMetrics", NODE_NAME, None, window), "usage": usage}

    def _pod(self, pod: JsonObj) -> JsonObj | None:
        key: Key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        live = self._kubelet.live.get(key)
        if not live:
            return None
        now = time.monotonic()
        groups = {name: run.process_group for name, run in live.items()}
        usage = procstat.group_usage({n: g for n, g in groups.items() if g is not None})
        nothing = procstat.Usage(0.0, 0)
        containers, windows = [], []
        for name, run in live.items():
            used = usage.get(name, nothing)
            runs = (key, name, run.started)  # a restarted container is another run
            cores, window = self._rates.rate(runs, now, used.cpu_s, (run.started, 0.0))
            containers.append({"name": name, "usage": _usage(cores, used.rss_bytes)})
            windows.append(window)
        return {**_meta("PodMetrics", key[1], key[0], max(windows)), "containers": containers}

    def _forget_ended(self) -> None:
        live = self._kubelet.live.items()
        runs = {(key, name, run.started) for key, named in live for name, run in named.items()}
        self._rates.keep_only(runs | {NODE_NAME})


class _Rates:
    """CPU rates as scrapes give them: over the time since the previous reading that is at
    least a second old, so that reads in quick succession share one window."""

    def __init__(self) -> None:
        self._readings: dict[Hashable, tuple[float, float]] = {}  # what -> (when, CPU s)

    def rate(
        self, what: Hashable, now: float, used_s: float, since: tuple[float, float]
    ) -> tuple[float, float]:
        """(cores, window in seconds) for `what`, which had used `since[1]` at `since[0]`
        when it has not been read before."""
        then, used_then = self._readings.get(what, since)
        if what not in self._readings or now - then >= 1.0:
            self._readings[what] = (now, used_s)
        window = max(now - then, 1e-3)
        return max(used_s - used_then, 0.0) / window, window

    def keep_only(self, wanted: set[Hashable]) -> None:
        """Forget what is no longer there to read (ended containers)."""
        for gone in self._readings.keys() - wanted:
            del self._readings[gone]


def _meta(kind: str, name: str, namespace: str | None, window_s: float) -> JsonObj:
    metadata: JsonObj = {"name": name, "creationTimestamp": rfc3339()}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "kind": kind,
        "apiVersion": GROUP_VERSION,
        "metadata": metadata,
        "timestamp": rfc3339(),
        "window": f"{window_s:.3f}s",
    }


def _usage(cores: float, memory_bytes: int) -> JsonObj:
    """Quantities as metrics-server writes them: nanocores and KiB."""
    return {"cpu": f"{max(round(cores * 1e9), 0)}n", "memory": f"{memory_bytes // 1024}Ki"}


def _listed(kind: str, items: list[Any]) -> JsonObj:
    return {"kind": kind, "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}
