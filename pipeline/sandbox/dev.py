"""The whole pipeline on loopback: broker, Kubernetes emulator, Celery, a worker, every stage.

`pipeline dev` and the end-to-end tests share this, so what a new user runs is what the
tests prove. Stages run as real `pipeline run STAGE` processes configured only by env.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson

from pipeline.config import Settings, load_settings
from pipeline.kafka import create_topics
from pipeline.sandbox.broker import free_port, tansu_broker
from pipeline.sandbox.kube import FaultConfig, KubeEmulator, Mode, Timings
from pipeline.sandbox.processes import ProcessGroup
from pipeline.sandbox.profile import sandbox_env
from pipeline.stages import STAGES

CELERY_QUEUES = ("default",)
LOOPBACK = "127.0.0.1"
DEFAULT_BROKER_PORT = 9092
"""The port of `kafka.bootstrap_servers`' default, which `pipeline dev` takes when it is free."""
DEFAULT_API_PORT = 8090
"""`reducer.api_port`'s default, likewise."""
DEFAULT_UI_PORT = 8070
"""`ui.port`'s default (the dashboard), likewise."""
ENV_FILE = "dev.env"
"""The `export PIPELINE_…` lines a second terminal sources, in the work dir."""


def port_or_free(preferred: int) -> int:
    """`preferred` when it can be bound on loopback now, else a free port."""
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, preferred))
        except OSError:
            return free_port(LOOPBACK)
    return preferred


def redis_answers(url: str) -> bool:
    """True when a Redis server answers PING at `url`'s host and port."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return False
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def celery_env(settings: Settings, work_dir: Path) -> dict[str, str]:
    """The Redis the user configured, when it answers; else a broker and result store of the
    sandbox's own that need no server (files and SQLite in the work dir). A Redis that merely
    runs on the default port is not taken: its dbs and queues may be anyone's, another
    sandbox's workers included."""
    broker_url = settings.celery.broker_url.get_secret_value()
    if "broker_url" in settings.celery.model_fields_set and redis_answers(broker_url):
        return {}
    folder = work_dir / "celery-broker"
    folder.mkdir(parents=True, exist_ok=True)
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    return {
        "PIPELINE_CELERY_BROKER_URL": "filesystem://",
        "PIPELINE_CELERY_BROKER_TRANSPORT_OPTIONS": orjson.dumps(options).decode(),
        "PIPELINE_CELERY_RESULT_BACKEND": f"db+sqlite:///{work_dir / 'celery-results.sqlite'}",
    }


class DevError(RuntimeError):
    """The sandbox could not be brought up or a part of it died."""


@dataclass
class DevOptions:
    partitions: int = 4
    kube_mode: Mode = "process"
    faults: FaultConfig | None = None
    timings: Timings | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    work_dir: Path | None = None
    default_ports: bool = False
    """Broker on 9092 and reducer API on 8090 when free (the documented defaults, so the CLI
    works unconfigured); else, and for tests, free ports."""


@dataclass
class DevEnvironment:
    """Everything `pipeline dev` started; `settings` is what a client of it should use."""

    settings: Settings
    emulator: KubeEmulator
    processes: ProcessGroup
    work_dir: Path
    http_ports: dict[str, int]
    temporary: bool = False
    """`work_dir` is removed when the sandbox stops cleanly."""

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.reducer.api_port}"

    def client_env(self) -> dict[str, str]:
        """The settings a CLI or worker in another terminal needs to use this sandbox."""
        celery = self.settings.celery
        env = {
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka.bootstrap_servers,
            "PIPELINE_REDUCER_API_URL": self.api_url,
            "PIPELINE_KUBE_CONFIG": str(self.emulator.kubeconfig_path),
            "PIPELINE_CELERY_BROKER_URL": celery.broker_url.get_secret_value(),
            "PIPELINE_CELERY_RESULT_BACKEND": celery.result_backend.get_secret_value(),
            **sandbox_env(),  # a stage started by hand needs the sandbox broker's timings too
        }
        if celery.broker_transport_options:
            options = orjson.dumps(celery.broker_transport_options).decode()
            env["PIPELINE_CELERY_BROKER_TRANSPORT_OPTIONS"] = options
        return env

    def write_env_file(self) -> Path:
        """`export` lines for `client_env`, readable by the owner only (URLs may hold secrets)."""
        path = self.work_dir / ENV_FILE
        lines = [f"export {name}={shlex.quote(value)}" for name, value in self.client_env().items()]
        path.touch(mode=0o600)
        path.write_text("\n".join(lines) + "\n")
        return path

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.ui.port}"

    def stage_url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.http_ports[name]}"

    def readiness_urls(self) -> dict[str, str]:
        ready = {name: f"{self.stage_url(name)}/readyz" for name in self.http_ports}
        return ready | {"dashboard": f"{self.dashboard_url}/healthz"}

    async def wait_ready(self, timeout_s: float = 120.0, only: str | None = None) -> None:
        """Until every stage (or `only` that one) answers ready; a child that exits, or the
        deadline, fails it."""
        pending = {n: url for n, url in self.readiness_urls().items() if only in (None, n)}
        try:
            async with aiohttp.ClientSession() as session, asyncio.timeout(timeout_s):
                while pending:
                    if dead := self.processes.exited():
                        names = ", ".join(c.name for c in dead)
                        raise DevError(f"{names} exited during start-up; logs in {self.work_dir}")
                    for name, url in list(pending.items()):
                        with contextlib.suppress(aiohttp.ClientError):
                            async with session.get(url) as response:
                                if response.status == 200:
                                    del pending[name]
                    await asyncio.sleep(0.2)
        except TimeoutError:
            names = ", ".join(sorted(pending))
            message = f"{names} not ready after {timeout_s:.0f}s; logs in {self.work_dir}"
            raise DevError(message) from None

    async def restart_stage(self, name: str) -> None:
        await self.processes.children[name].restart()


def stage_env(bootstrap: str, kubeconfig: Path, options: DevOptions) -> dict[str, str]:
    allowed = [[sys.executable], ["python"], ["python3"], ["airflow", "tasks", "run"]]
    return {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PIPELINE_KUBE_CONFIG": str(kubeconfig),
        "PIPELINE_TOPIC_PARTITIONS": str(options.partitions),
        "PIPELINE_SECURITY_ALLOWED_COMMANDS": orjson.dumps(allowed).decode(),
        "PIPELINE_RUNTIME_LOG_FORMAT": "json",
        "PIPELINE_RUNTIME_HTTP_HOST": LOOPBACK,  # the reducer's API binds this too
        "PIPELINE_REDUCER_API_PORT": str(
            port_or_free(DEFAULT_API_PORT) if options.default_ports else free_port()
        ),
        **sandbox_env(),
        "PIPELINE_UI_PORT": str(
            port_or_free(DEFAULT_UI_PORT) if options.default_ports else free_port()
        ),
        "PIPELINE_UI_ACTIONS": "true",  # a sandbox on loopback: cancel and redrive allowed
        **options.extra_env,
    }


@contextlib.contextmanager
def work_folder(given: Path | None) -> Iterator[Path]:
    """`given`, or a temporary folder that is removed when the block ends cleanly (a stop
    included) and kept when it fails, so the logs an error points at are still there."""
    if given is not None:
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="pipeline-dev-"))
    failed = False
    try:
        yield folder
    except Exception:  # not Ctrl-C or a cancellation: those are clean stops
        failed = True
        raise
    finally:
        if not failed:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def dev_environment(options: DevOptions | None = None) -> AsyncIterator[DevEnvironment]:
    """Start the whole sandbox; on exit stop every child, the emulator and the broker."""
    options = options or DevOptions()
    with contextlib.ExitStack() as stack:
        work_dir = stack.enter_context(work_folder(options.work_dir))
        broker_port = port_or_free(DEFAULT_BROKER_PORT) if options.default_ports else None
        broker = stack.enter_context(tansu_broker(broker_port, host=LOOPBACK, log_dir=work_dir))
        async with KubeEmulator(
            mode=options.kube_mode, faults=options.faults, timings=options.timings
        ) as emulator:
            env = stage_env(broker.bootstrap_servers, emulator.kubeconfig_path, options)
            with _patched_environ(env):  # extra_env may name the Celery broker
                env |= celery_env(load_settings(), work_dir)
            with _patched_environ(env):
                settings = load_settings()
            for namespace in {settings.kube.namespace, *settings.watcher.namespaces}:
                emulator.cluster.ensure_namespace(namespace)  # the stages' own, as configured
            await create_topics(settings.kafka, settings.topic)
            processes = ProcessGroup(work_dir, {**os.environ, **env})
            http_ports = {name: free_port() for name in STAGES}
            try:
                await processes.start(
                    "celery-worker", "celery-worker", *(f"--queue={q}" for q in CELERY_QUEUES)
                )
                for name in STAGES:
                    port = {"PIPELINE_RUNTIME_HTTP_PORT": str(http_ports[name])}
                    await processes.start(name, "run", name, env=port)
                stages = {name: [f"http://{LOOPBACK}:{port}"] for name, port in http_ports.items()}
                ui_env = {"PIPELINE_UI_STAGES": orjson.dumps(stages).decode()}
                await processes.start("dashboard", "ui", env=ui_env)
                yield DevEnvironment(
                    settings, emulator, processes, work_dir, http_ports, options.work_dir is None
                )
            finally:
                await processes.stop_all()


@contextlib.contextmanager
def _patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Settings are read from the environment: show them the children's environment."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
