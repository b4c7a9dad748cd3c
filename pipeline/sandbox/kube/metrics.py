"""The resource metrics API (metrics.k8s.io/v1beta1) that `kubectl top` reads.

A cluster's metrics-server reports each running container's CPU rate and working memory,
and each node's. Here a process-mode container is its local process group, so its figures
are real: CPU seconds over its life so far (the `window`) and resident memory, from /proc. A
simulated container uses nothing and says so (zero). The node reports this machine: its
busy CPU since the previous node read (or the emulator's start) and the memory in use.
"""

from __future__ import annotations

import time
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
        self._node_sample = (time.monotonic(), procstat.machine_busy_s())

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
        return json_response(_listed("PodMetricsList", found))

    async def get_pod(self, request: web.Request) -> web.Response:
        await self._admit("get")
        key = request.match_info["namespace"], request.match_info["name"]
        found = self._pod(self._pods.get(key))
        if found is None:  # as metrics-server: a pod with nothing running has no metrics
            raise not_found(key[1], "pods.metrics.k8s.io")
        return json_response(found)

    def _node(self) -> JsonObj:
        now, busy = time.monotonic(), procstat.machine_busy_s()
        then, busy_then = self._node_sample
        if now - then >= 1.0:  # a rate over at least a second, as a scrape would be
            self._node_sample = (now, busy)
        window = max(now - then, 1e-3)
        usage = _usage((busy - busy_then) / window, procstat.machine_memory_used())
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
        containers = [
            {"name": name, "usage": _rate(usage.get(name, nothing), now - run.started)}
            for name, run in live.items()
        ]
        window = max(now - min(run.started for run in live.values()), 1e-3)
        return {**_meta("PodMetrics", key[1], key[0], window), "containers": containers}


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


def _rate(used: procstat.Usage, lifetime_s: float) -> JsonObj:
    """A container's CPU over its life so far, and its resident memory now."""
    return _usage(used.cpu_s / max(lifetime_s, 1e-3), used.rss_bytes)


def _listed(kind: str, items: list[Any]) -> JsonObj:
    return {"kind": kind, "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}
