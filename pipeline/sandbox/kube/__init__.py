"""A Kubernetes core/v1 pods API emulator with a simulated kubelet and injectable faults.

It serves real HTTP on 127.0.0.1 for the official `kubernetes` client (through the kubeconfig
it writes), so the launcher and watcher are tested against API behaviour, not mocks:

    async with KubeEmulator(port=0, mode="simulate") as emu:
        config.load_kube_config(config_file=str(emu.kubeconfig_path), ...)
        emu.faults.fail("create", code=429, count=3)

It runs on the caller's event loop; call the synchronous client from another thread
(`asyncio.to_thread`), never from the loop itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import TracebackType

import yaml
from aiohttp import web

from . import auth, metrics
from .admin import admin_routes
from .cluster import ClusterApi, sandbox_node
from .discovery import (
    EVENT_RESOURCE,
    NAMESPACE_RESOURCE,
    NODE_RESOURCE,
    POD_RESOURCE,
    SERVICE_RESOURCE,
)
from .eventapi import EventApi
from .events import EventRecorder
from .faults import ErrorRule, FaultConfig, Faults
from .kubelet import (
    EXIT_CODE,
    LOGS,
    MODES,
    NODE_NAME,
    PENDING_SECONDS,
    RUN_SECONDS,
    Kubelet,
    KubeletStats,
    Mode,
    Timings,
)
from .server import PodApi, ServerStats, build_app
from .store import PodStore

__all__ = [
    "EXIT_CODE",
    "LOGS",
    "MODES",
    "PENDING_SECONDS",
    "RUN_SECONDS",
    "ErrorRule",
    "FaultConfig",
    "Faults",
    "KubeEmulator",
    "KubeletStats",
    "Mode",
    "ServerStats",
    "Timings",
]


class KubeEmulator:
    """Start with `async with` (or `start()`/`close()`); `port=0` picks a free port."""

    def __init__(
        self,
        port: int = 0,
        mode: Mode = "simulate",
        token: str | None = None,
        *,
        host: str = "127.0.0.1",
        namespace: str = "default",
        capacity: int | None = None,
        timings: Timings | None = None,
        faults: FaultConfig | None = None,
        history_size: int = 10_000,
        bookmark_interval: float = 60.0,
        seed: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.host = host
        self.port = port
        self.token = token
        self.namespace = namespace
        self.store = PodStore(history_size)
        self.faults = Faults(faults, seed)
        self.event_store = PodStore(history_size, resource="events")
        recorder = EventRecorder(self.event_store, NODE_NAME)
        self.kubelet = Kubelet(self.store, self.faults, mode, capacity, timings, recorder)
        self.api = PodApi(
            self.store, self.kubelet, self.faults, bookmark_interval=bookmark_interval, seed=seed
        )
        self.events = EventApi(self.event_store, self.faults, self.api.admit, bookmark_interval)
        self.cluster = ClusterApi(
            sandbox_node(mode, capacity),
            self.api,
            self.event_store,
            self.faults,
            bookmark_interval,
        )
        self.api.require_active = self.cluster.require_active
        self.cluster.ensure_namespace(namespace)
        self._runner: web.AppRunner | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.kubeconfig_path = Path()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stats(self) -> ServerStats:
        return self.api.stats

    def oom_kill(self, namespace: str, name: str) -> None:
        """OOM-kill a running pod now: exit 137, reason OOMKilled, phase Failed."""
        self.kubelet.disrupt((namespace, name), "oom")

    def evict(self, namespace: str, name: str) -> None:
        """Evict a running pod now: phase Failed, reason Evicted, DisruptionTarget."""
        self.kubelet.disrupt((namespace, name), "evict")

    async def start(self) -> None:
        admin = admin_routes(self.faults, self.kubelet, self.api.stats)
        served = (
            POD_RESOURCE, EVENT_RESOURCE, NODE_RESOURCE, NAMESPACE_RESOURCE, SERVICE_RESOURCE,
            *auth.RESOURCES, *metrics.RESOURCES,
        )  # fmt: skip
        usage = metrics.MetricsApi(self.kubelet, self.store, self.api.admit)
        routes = [
            *admin, *self.events.routes(), *self.cluster.routes(), *auth.auth_routes(),
            *usage.routes(),
        ]  # fmt: skip
        app = build_app(self.api, self.token, routes, served)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,  # a client gone mid-watch ends its stream
            shutdown_timeout=2.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.cluster.serve_api_at(self.port)
        self.kubelet.start()
        self._tmp = tempfile.TemporaryDirectory(prefix="pipeline-kube-")
        self.kubeconfig_path = Path(self._tmp.name) / "kubeconfig"
        self.kubeconfig_path.write_text(yaml.safe_dump(self.kubeconfig()))

    async def close(self) -> None:
        self.api.close_watches()
        self.events.events.close_watches()
        self.cluster.close_watches()
        await self.kubelet.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> KubeEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def kubeconfig(self) -> dict[str, object]:
        """A kubeconfig pointing at this emulator, with its token when auth is on."""
        user: dict[str, str] = {"token": self.token} if self.token else {}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "sandbox", "cluster": {"server": self.url}}],
            "users": [{"name": "sandbox", "user": user}],
            "contexts": [
                {
                    "name": "sandbox",
                    "context": {
                        "cluster": "sandbox",
                        "user": "sandbox",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": "sandbox",
            "preferences": {},
        }
