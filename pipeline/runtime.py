"""The stage runtime: lifecycle, signals, health and metrics endpoints, guarded tasks.

A stage is a small class with `run(stopping)`; the runtime gives it one stop flag, an HTTP
port for probes and `/metrics`, and a hard deadline so that a stop always ends the process.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, ClassVar, Protocol, TypeVar

import prometheus_client
from aiohttp import web

from pipeline import eventloop, logs
from pipeline.config import Settings
from pipeline.kafka import BrokerUnreachable

log = logging.getLogger(__name__)


class Stage(abc.ABC):
    """One pipeline stage. Subclasses set `name` and implement `run`."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = settings.runtime.instance or f"{socket.gethostname()}-{os.getpid()}"
        self.ready = False

    @abc.abstractmethod
    async def run(self, stopping: asyncio.Event) -> None:
        """Work until `stopping` is set, then finish in-flight work, commit and return."""

    def health(self) -> tuple[bool, str]:
        """Liveness: False when the stage is wedged and should be restarted."""
        return True, "ok"


def guard(
    coro: Coroutine[Any, Any, Any], name: str, stopping: asyncio.Event | None = None
) -> asyncio.Task[Any]:
    """Start a task that must live as long as the stage; its crash or early return is loud.

    A task that returns after `stopping` was set ended as asked, and says so quietly.
    """

    def _report(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            log.info("background task %s cancelled", name)
        elif exc := task.exception():
            log.error("background task %s crashed", name, exc_info=exc)
        elif stopping is not None and stopping.is_set():
            log.info("background task %s finished", name)
        else:
            log.warning("background task %s returned unexpectedly", name)

    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_report)
    return task


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], patience_s: float = 1.0) -> None:
    """Cancel the tasks and return once every one has ended.

    A cancellation can be lost inside a library (aiokafka's consumer `stop()` suppresses the
    CancelledError it meets while awaiting its fetch task), so a task still running after
    `patience_s` is cancelled again rather than awaited forever.
    """
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience_s)


async def sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if the stop flag is set meanwhile: no pause delays a stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


ItemT = TypeVar("ItemT")


async def next_unless_stopped(
    queue: asyncio.Queue[ItemT], stop: asyncio.Future[Any]
) -> ItemT | None:
    """The queue's next item, or None once `stop` resolved first."""
    if not queue.empty():
        return queue.get_nowait()
    get = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
    if get in done:
        return get.result()
    get.cancel()
    return None


StageT = TypeVar("StageT", bound=Stage)


@contextlib.asynccontextmanager
async def running(stage: StageT, stop_timeout_s: float = 60.0) -> AsyncIterator[StageT]:
    """Run a stage in this process for the block, then stop it through its stop flag, as
    SIGTERM would (for benchmarks and tests that drive a stage without a process)."""
    stopping = asyncio.Event()
    task = asyncio.create_task(stage.run(stopping), name=stage.name)
    try:
        yield stage
    finally:
        stopping.set()
        await asyncio.wait_for(task, stop_timeout_s)


class Probe(Protocol):
    """What the health endpoints ask: any stage, or a process that is not a `Stage`."""

    @property
    def ready(self) -> bool: ...

    def health(self) -> tuple[bool, str]: ...


def health_app(stage: Probe) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        ok, detail = stage.health()
        return web.json_response({"ok": ok, "detail": detail}, status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"ready": stage.ready}, status=200 if stage.ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = prometheus_client.generate_latest()
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1] if runner.addresses else port
    log.info("http listening", extra={"host": host, "port": bound_port})
    return runner


STARTUP_BACKOFF_S = (0.5, 10.0)
"""First and longest pause between start-up attempts (doubling in between)."""


class StartupFailed(RuntimeError):
    """Kafka stayed unreachable for the whole start-up deadline."""


async def run_until_connected(stage: Stage, stopping: asyncio.Event) -> None:
    """`stage.run`, started again with backoff while Kafka cannot be reached before the stage
    got ready, one warning line per attempt; StartupFailed once `startup_timeout_s` is over.
    Once ready, an unreachable broker is the stage's own failure, as before."""
    loop = asyncio.get_running_loop()
    quiet = _QuietUntilReady(stage)  # aiokafka's own line per failed connect says it twice
    logging.getLogger("aiokafka").addFilter(quiet)
    try:
        await _attempts(stage, stopping, loop)
    finally:
        logging.getLogger("aiokafka").removeFilter(quiet)


class _QuietUntilReady(logging.Filter):
    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self.stage = stage

    def filter(self, record: logging.LogRecord) -> bool:
        return self.stage.ready or not record.getMessage().startswith("Unable connect")


async def _attempts(stage: Stage, stopping: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
    timeout_s = stage.settings.runtime.startup_timeout_s
    deadline = loop.time() + timeout_s
    delay, longest = STARTUP_BACKOFF_S
    attempt = 1
    while True:
        try:
            await stage.run(stopping)
            return
        except BrokerUnreachable as exc:
            left = deadline - loop.time()
            if stage.ready or stopping.is_set():
                raise
            if left <= 0:
                message = f"{exc}; gave up after {attempt} attempts in {timeout_s:.0f}s"
                raise StartupFailed(message) from None
            pause = min(delay, left)
            log.warning(f"{exc}; attempt {attempt}, retrying in {pause:.1f}s")
            await sleep_unless_stopped(stopping, pause)
            delay, attempt = min(delay * 2, longest), attempt + 1


async def run_stage(stage: Stage) -> int:
    """Run a stage until SIGTERM/SIGINT or a crash; return the process exit code.

    On a signal the stop flag is set and the stage gets `shutdown_timeout_s` to finish
    in-flight work and commit; past that it is cancelled so the process always ends.
    """
    runtime = stage.settings.runtime
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    runner = await serve_http(health_app(stage), runtime.http_host, runtime.http_port)
    work = asyncio.create_task(run_until_connected(stage, stopping), name=stage.name)
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({work, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            log.info("stopping", extra={"deadline_s": runtime.shutdown_timeout_s})
            done, _ = await asyncio.wait({work}, timeout=runtime.shutdown_timeout_s)
            if not done:
                log.error("shutdown deadline passed; cancelling in-flight work")
                await cancel_and_wait([work])
                return 1
        if isinstance(exc := work.exception(), StartupFailed):
            log.error(str(exc))
            return 1
        if exc:
            log.error("stage crashed", exc_info=exc)
            return 1
        if not stopping.is_set():
            log.error("stage returned without being asked to stop")
            return 1
        log.info("stopped cleanly")
        return 0
    finally:
        stop_wait.cancel()
        stage.ready = False
        await runner.cleanup()


def main(stage: Stage) -> int:
    """Configure logging and run a stage to completion in a fresh event loop."""
    runtime = stage.settings.runtime
    logs.configure(stage.name, runtime.log_level, runtime.log_format)
    with logs.bound(instance=stage.instance):
        return eventloop.run(run_stage(stage))
