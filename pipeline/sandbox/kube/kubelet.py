"""The simulated node: schedules pods within a capacity and moves them through their phases.

It listens to the store like a real scheduler+kubelet watch, and writes each step back as
a status update, so every step reaches clients as a MODIFIED watch event. `simulate` mode
takes durations and exit codes from pod annotations; `process` mode runs the container's
command as a local process; `off` is a cluster without nodes (pods stay Pending, untouched).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from . import podstatus
from .events import SCHEDULER, EventRecorder, EventType
from .faults import Faults
from .logs import ContainerLogs, LogBuffer
from .pods import rfc3339
from .podstatus import Termination
from .runtime import ContainerRun, ProcessRun, SimulatedRun, StartError
from .status import ApiError, JsonObj
from .store import Event, Key, PodStore, pod_key

log = logging.getLogger(__name__)

Mode = Literal["simulate", "process", "off"]
MODES: tuple[Mode, ...] = ("simulate", "process", "off")
ANNOTATION_PREFIX = "sandbox.pipeline.dev/"
PENDING_SECONDS = ANNOTATION_PREFIX + "pending-seconds"  # scheduled -> Running
RUN_SECONDS = ANNOTATION_PREFIX + "run-seconds"  # Running -> terminated (simulate)
EXIT_CODE = ANNOTATION_PREFIX + "exit-code"  # container exit code (simulate)
LOGS = ANNOTATION_PREFIX + "logs"  # container output served by pods/log (simulate)
NODE_NAME = "sandbox-node"
MAX_BACKOFF_SECONDS = 300.0  # the kubelet's cap on the restart back-off
_EVICTED = "The node was low on resource: memory. "
_DEADLINE_EXCEEDED = "Pod was active on the node longer than the specified deadline"


@dataclass(frozen=True)
class Timings:
    """Defaults for pods without annotations; short so tests stay fast."""

    pending_seconds: float = 0.0
    run_seconds: float = 0.2
    exit_code: int = 0
    backoff_seconds: float = 0.05  # ErrImagePull -> ImagePullBackOff
    restart_backoff_seconds: float = 1.0  # first CrashLoopBackOff delay, doubling per restart


@dataclass(frozen=True)
class Stop:
    """Why a running pod must end before its containers do."""

    reason: Literal["delete", "oom", "evict", "deadline"]
    grace_seconds: float = 0.0


@dataclass
class KubeletStats:
    running: int = 0
    max_running: int = 0
    started: int = 0


@dataclass
class _PodRun:
    task: asyncio.Task[Any]
    stop: asyncio.Future[Stop] = field(default_factory=asyncio.Future)
    running: bool = False


class Kubelet:
    def __init__(
        self,
        store: PodStore,
        faults: Faults,
        mode: Mode = "simulate",
        capacity: int | None = None,
        timings: Timings | None = None,
        recorder: EventRecorder | None = None,
    ) -> None:
        self._store = store
        self._events = recorder
        self._faults = faults
        self.mode: Mode = mode
        self.capacity = capacity
        self.timings = timings or Timings()
        self.stats = KubeletStats()
        self.logs: dict[Key, dict[str, ContainerLogs]] = {}
        self.live: dict[Key, dict[str, ContainerRun]] = {}  # running containers, by pod
        self._queue: dict[Key, bool] = {}  # FIFO of unscheduled pods -> marked Unschedulable
        self._runs: dict[Key, _PodRun] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._next_ip = 0

    def start(self) -> None:
        if self.mode != "off":
            self._unsubscribe = self._store.add_listener(self._on_event)

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        runs = list(self._runs.values())
        for run in runs:
            run.task.cancel()
        await asyncio.gather(*(r.task for r in runs), return_exceptions=True)

    def disrupt(self, key: Key, reason: Literal["oom", "evict"]) -> None:
        """OOM-kill or evict a running pod now (admin endpoint and in-process control)."""
        run = self._runs.get(key)
        if run is None or not run.running:
            raise ApiError(409, "Conflict", f'pod "{key[1]}" is not running on {NODE_NAME}')
        _resolve(run.stop, Stop(reason))

    def _on_event(self, event: Event) -> None:
        key = pod_key(event.obj)
        if event.type == "ADDED":
            self._queue[key] = False
            self._schedule()
        elif event.type == "DELETED":
            self._queue.pop(key, None)
            for container_logs in self.logs.pop(key, {}).values():
                container_logs.close()  # followers of a deleted pod's log end
            run = self._runs.get(key)
            if run is not None:
                _resolve(run.stop, Stop("delete"))
        elif event.obj["metadata"].get("deletionTimestamp"):
            self._on_graceful_delete(key, event.obj)

    def _on_graceful_delete(self, key: Key, pod: JsonObj) -> None:
        run = self._runs.get(key)
        if run is None:
            self._spawn(self._finish_delete(key))
            return
        grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        _resolve(run.stop, Stop("delete", grace))

    def _schedule(self) -> None:
        while self._queue and (self.capacity is None or len(self._runs) < self.capacity):
            key = next(iter(self._queue))
            del self._queue[key]
            self._runs[key] = _PodRun(self._spawn(self._lifecycle(key)))
        for key, marked in self._queue.items():
            if not marked:
                self._queue[key] = True
                message = f"0/1 nodes are available: 1 Too many pods (capacity {self.capacity})."
                self._spawn(self._write(key, partial(podstatus.unschedulable, message=message)))
                self._event(key, "FailedScheduling", message, "Warning", component=SCHEDULER)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        task.add_done_callback(_log_crash)
        return task

    async def _write(self, key: Key, change: Callable[[JsonObj], JsonObj]) -> JsonObj | None:
        """Apply a status step; None once the pod is gone (deleted under our feet)."""
        try:
            return self._store.mutate(key, change)
        except ApiError:
            return None

    async def _finish_delete(self, key: Key) -> None:
        with contextlib.suppress(ApiError):
            self._store.remove(key)

    async def _lifecycle(self, key: Key) -> None:
        try:
            await self._run_pod(key)
        finally:
            run = self._runs.pop(key, None)
            if run is not None and run.running:
                self.stats.running -= 1
            self._schedule()

    async def _run_pod(self, key: Key) -> None:
        run = self._runs[key]
        self._next_ip += 1
        pod_ip = f"10.244.{self._next_ip // 250 % 250}.{self._next_ip % 250 + 1}"
        await self._write(key, lambda p: podstatus.bound(p, NODE_NAME))
        assigned = f"Successfully assigned {key[0]}/{key[1]} to {NODE_NAME}"
        self._event(key, "Scheduled", assigned, component=SCHEDULER)
        pod = await self._write(key, lambda p: podstatus.creating(p, pod_ip))
        if pod is None:
            return
        deadline = self._arm_deadline(pod, run.stop)
        try:
            await self._run_started_pod(key, pod, run)
        finally:
            if deadline is not None:
                deadline.cancel()

    async def _run_started_pod(self, key: Key, pod: JsonObj, run: _PodRun) -> None:
        """From the pod's start (images, init containers) to its end and its status."""
        early = await self._before_start(key, pod, run.stop)
        if early is not None or not await self._initialize(key, pod, run.stop):
            await self._ended_early(key, run.stop.result() if run.stop.done() else None)
            return
        started_at = rfc3339()
        ends = await self._run_containers(key, pod, run, started_at)
        stop = run.stop.result() if run.stop.done() else None
        reason, message = _pod_reason(stop)
        await self._write(key, lambda p: podstatus.terminated(p, ends, reason, message))
        if stop is not None and stop.reason == "delete":
            await self._finish_delete(key)

    async def _ended_early(self, key: Key, stop: Stop | None) -> None:
        """The pod ended before its app containers started: deleted, failed in its init
        containers (status written), or out of its active deadline."""
        if stop is not None and stop.reason == "delete":
            await self._finish_delete(key)
        elif stop is not None and stop.reason == "deadline":
            self._event(key, "DeadlineExceeded", _DEADLINE_EXCEEDED, "Warning")
            await self._write(
                key, lambda p: podstatus.failed(p, "DeadlineExceeded", _DEADLINE_EXCEEDED)
            )

    async def _before_start(
        self, key: Key, pod: JsonObj, stop: asyncio.Future[Stop]
    ) -> Stop | None:
        """Pull images (or fail to) and wait the pending time; a Stop if one came first."""
        containers = [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
        images = [c["image"] for c in containers]
        fault = next((f for f in map(self._faults.image_fault, images) if f), None)
        first = containers[0]["name"]
        if fault is not None:
            self._event(key, "Pulling", f'Pulling image "{images[0]}"', container=first)
        if fault == "backoff":
            message = f'Back-off pulling image "{images[0]}"'
            failed = f'Failed to pull image "{images[0]}": not found in the sandbox'
            self._event(key, "Failed", failed, "Warning", container=first)
            self._event(key, "Failed", "Error: ErrImagePull", "Warning", container=first)
            await self._write(key, lambda p: podstatus.waiting(p, "ErrImagePull", message))
            await _until(stop, self.timings.backoff_seconds)
            await self._write(key, lambda p: podstatus.waiting(p, "ImagePullBackOff", message))
            self._event(key, "BackOff", message, container=first)
            self._event(key, "Failed", "Error: ImagePullBackOff", "Warning", container=first)
        if fault is not None:
            return await stop
        seconds = _annotation(pod, PENDING_SECONDS, self.timings.pending_seconds)
        return await _until(stop, seconds)

    async def _initialize(self, key: Key, pod: JsonObj, stop: asyncio.Future[Stop]) -> bool:
        """Run the init containers one after another, each to success (a failed one is
        restarted unless the restartPolicy is Never); False when the pod ends here."""
        logs = self.logs.setdefault(key, {})
        never = pod["spec"].get("restartPolicy", "Always") == "Never"
        for container in pod["spec"].get("initContainers") or []:
            name, restarts = container["name"], 0
            buffer = logs.setdefault(name, ContainerLogs()).current
            while True:
                started_at = rfc3339()
                current = await self._start(pod, container, buffer)
                await self._write(
                    key, partial(podstatus.init_running, name=name, started_at=started_at)
                )
                end = await self._until_exit(key, name, current, stop, started_at)
                if end.exit_code == 0 or never or stop.done():
                    await self._write(key, partial(podstatus.init_ended, name=name, end=end))
                    if end.exit_code != 0 or stop.done():
                        return False
                    break
                delay, message = self._back_off(key, pod, name, restarts)
                logs[name].exited()
                await self._write(
                    key, partial(podstatus.init_restarting, name=name, end=end, message=message)
                )
                if await _until(stop, delay) is not None:
                    return False
                restarts += 1
                buffer = logs[name].restart()
        return True

    def _back_off(self, key: Key, pod: JsonObj, name: str, restarts: int) -> tuple[float, str]:
        """The delay before restarting a failed container, its status message, and the
        BackOff event the kubelet records."""
        delay = min(self.timings.restart_backoff_seconds * 2**restarts, MAX_BACKOFF_SECONDS)
        pod_ref = f"{pod['metadata']['name']}_{key[0]}({pod['metadata']['uid']})"
        message = f"back-off {delay:g}s restarting failed container={name} pod={pod_ref}"
        crashed = f"Back-off restarting failed container {name} in pod {pod_ref}"
        self._event(key, "BackOff", crashed, "Warning", container=name)
        return delay, message

    async def _run_containers(
        self, key: Key, pod: JsonObj, run: _PodRun, started_at: str
    ) -> dict[str, Termination]:
        logs = self.logs.setdefault(key, {})
        containers = pod["spec"]["containers"]
        buffers = [logs.setdefault(c["name"], ContainerLogs()).current for c in containers]
        runs = await asyncio.gather(
            *(self._start(pod, c, b) for c, b in zip(containers, buffers, strict=True))
        )
        await self._write(key, lambda p: podstatus.running(p, started_at))
        run.running = True
        self._count_running()
        self._arm_disruption(pod, run.stop)
        ends = await asyncio.gather(
            *(
                self._supervise(key, pod, c, r, started_at, run.stop)
                for c, r in zip(containers, runs, strict=True)
            )
        )
        return {c["name"]: end for c, end in zip(containers, ends, strict=True)}

    async def _supervise(
        self,
        key: Key,
        pod: JsonObj,
        container: JsonObj,
        first: ContainerRun | str,
        started_at: str,
        stop: asyncio.Future[Stop],
    ) -> Termination:
        """Run one container to its end, restarting it as the pod's restartPolicy says."""
        current, restarts = first, 0
        policy = pod["spec"].get("restartPolicy", "Always")
        while True:
            end = await self._until_exit(key, container["name"], current, stop, started_at)
            if stop.done() or not restarts_after(policy, end.exit_code):
                return end
            name = container["name"]
            self.logs[key][name].exited()
            delay, message = self._back_off(key, pod, name, restarts)
            backing_off = partial(podstatus.restarting, name=name, end=end, message=message)
            await self._write(key, backing_off)
            if await _until(stop, delay) is not None:
                return end
            restarts += 1
            started_at = rfc3339()
            current = await self._start(pod, container, self.logs[key][name].restart())
            await self._write(key, partial(podstatus.restarted, name=name, started_at=started_at))

    async def _until_exit(
        self,
        key: Key,
        name: str,
        container: ContainerRun | str,
        stop: asyncio.Future[Stop],
        started_at: str,
    ) -> Termination:
        """How the container ends: by itself, or stopped (delete, OOM kill, eviction)."""
        if isinstance(container, str):
            return Termination(128, "StartError", started_at, rfc3339(), container)
        live = self.live.setdefault(key, {})
        live[name] = container
        try:
            return await self._exit_of(key, name, container, stop, started_at)
        finally:
            live.pop(name, None)
            if not live and self.live.get(key) is live:
                del self.live[key]

    async def _exit_of(
        self,
        key: Key,
        name: str,
        container: ContainerRun,
        stop: asyncio.Future[Stop],
        started_at: str,
    ) -> Termination:
        exited: asyncio.Future[int] = asyncio.ensure_future(container.wait())
        either: list[asyncio.Future[Any]] = [exited, stop]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await container.stop(0)
            exited.cancel()
            raise
        if exited.done():
            code = exited.result()
        else:
            self._stopping(key, name, stop.result())
            graceful = stop.result().reason in ("delete", "deadline")
            grace = stop.result().grace_seconds if graceful else 0.0
            code = await container.stop(grace)
            exited.cancel()
            await asyncio.gather(exited, return_exceptions=True)
        return self._termination(code, stop, started_at, rfc3339())

    async def _start(
        self, pod: JsonObj, container: JsonObj, log_buffer: LogBuffer
    ) -> ContainerRun | str:
        """A started container, or the StartError message; the kubelet's events on the way."""
        started = await self._start_container(pod, container, log_buffer)
        key, name, image = pod_key(pod), container["name"], container["image"]
        if container.get("imagePullPolicy") == "Always":
            self._event(key, "Pulling", f'Pulling image "{image}"', container=name)
            pulled = f'Successfully pulled image "{image}" in 0s (0s including waiting)'
        else:
            pulled = f'Container image "{image}" already present on machine'
        self._event(key, "Pulled", pulled, container=name)
        if isinstance(started, str):
            self._event(key, "Failed", f"Error: {started}", "Warning", container=name)
        else:
            self._event(key, "Created", f"Created container: {name}", container=name)
            self._event(key, "Started", f"Started container {name}", container=name)
        return started

    async def _start_container(
        self, pod: JsonObj, container: JsonObj, log_buffer: LogBuffer
    ) -> ContainerRun | str:
        if self.mode == "simulate":
            seconds = _annotation(pod, RUN_SECONDS, self.timings.run_seconds)
            code = int(_annotation(pod, EXIT_CODE, self.timings.exit_code))
            output = (pod["metadata"].get("annotations") or {}).get(LOGS, "")
            return SimulatedRun(seconds, code, output, log_buffer, container)
        try:
            return await ProcessRun.start(pod, container, log_buffer)
        except StartError as exc:
            log_buffer.close()
            return str(exc)

    def _stopping(self, key: Key, container: str, stop: Stop) -> None:
        """The events of a container stopped from outside: Killing, OOMKilling, Evicted."""
        if stop.reason == "oom":
            oom = f"Memory cgroup out of memory: Killed process in container {container}"
            self._event(key, "OOMKilling", oom, "Warning", container=container)
            return
        if stop.reason == "evict":
            self._event(key, "Evicted", _EVICTED, "Warning")
        if stop.reason == "deadline":
            self._event(key, "DeadlineExceeded", _DEADLINE_EXCEEDED, "Warning")
        self._event(key, "Killing", f"Stopping container {container}", container=container)

    def _event(
        self,
        key: Key,
        reason: str,
        message: str,
        event_type: EventType = "Normal",
        *,
        component: str = "kubelet",
        container: str | None = None,
    ) -> None:
        """Record an event about the pod (if it still exists and events are on)."""
        if self._events is None:
            return
        try:
            pod = self._store.get(key)
        except ApiError:
            return
        try:
            self._events.record(
                pod, reason, message, event_type, component=component, container=container
            )
        except ApiError:  # an event must never stall the pod it is about
            log.exception("recording event %s for %s/%s failed", reason, *key)

    def _termination(
        self, code: int, stop: asyncio.Future[Stop], started: str, finished: str
    ) -> Termination:
        if stop.done() and stop.result().reason == "oom":
            return Termination(137, "OOMKilled", started, finished)
        return Termination(code, "Completed" if code == 0 else "Error", started, finished)

    def _arm_deadline(self, pod: JsonObj, stop: asyncio.Future[Stop]) -> asyncio.TimerHandle | None:
        """Stop the pod `activeDeadlineSeconds` after its start, as the kubelet does."""
        seconds = pod["spec"].get("activeDeadlineSeconds")
        if seconds is None:
            return None
        grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        loop = asyncio.get_running_loop()
        return loop.call_later(float(seconds), _resolve, stop, Stop("deadline", grace))

    def _arm_disruption(self, pod: JsonObj, stop: asyncio.Future[Stop]) -> None:
        images = (c["image"] for c in pod["spec"]["containers"])
        disruption = next((d for d in map(self._faults.disruption, images) if d), None)
        if disruption is not None:
            delay = self._faults.config.disruption_after_seconds
            asyncio.get_running_loop().call_later(delay, _resolve, stop, Stop(disruption))

    def _count_running(self) -> None:
        self.stats.running += 1
        self.stats.started += 1
        self.stats.max_running = max(self.stats.max_running, self.stats.running)


def restarts_after(policy: str, exit_code: int) -> bool:
    """Whether the kubelet restarts a container that exited with `exit_code`."""
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def _pod_reason(stop: Stop | None) -> tuple[str | None, str | None]:
    if stop is not None and stop.reason == "evict":
        return "Evicted", _EVICTED
    if stop is not None and stop.reason == "deadline":
        return "DeadlineExceeded", _DEADLINE_EXCEEDED
    return None, None


async def _until(stop: asyncio.Future[Stop], seconds: float) -> Stop | None:
    """Wait `seconds` unless a Stop arrives first (then return it)."""
    if stop.done() or seconds <= 0:
        return stop.result() if stop.done() else None
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(asyncio.shield(stop), seconds)
    return None


def _resolve(future: asyncio.Future[Stop], stop: Stop) -> None:
    if not future.done():
        future.set_result(stop)


def _annotation(pod: JsonObj, name: str, default: float) -> float:
    value = (pod["metadata"].get("annotations") or {}).get(name)
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("kubelet task crashed", exc_info=task.exception())
