"""Helpers for the watcher's integration tests: task pods, the events topic, stage runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes import client

from pipeline import launches, runtime
from pipeline.config import Settings, load_settings
from pipeline.messages import TERMINAL_STATES, TaskEvent, TaskKey
from pipeline.pods import pod_annotations, pod_labels, pod_name
from pipeline.sandbox.kube import EXIT_CODE, PENDING_SECONDS, RUN_SECONDS, KubeEmulator
from pipeline.tasklogs import decode_task_log
from pipeline.watcher.stage import WatcherStage
from tests.fixtures.kafka import read_all
from tests.fixtures.kube import pod_manifest
from tests.fixtures.polling import eventually


def configure(monkeypatch: pytest.MonkeyPatch, **watcher: object) -> Settings:
    """Change watcher settings for this test (env too, so child processes agree)."""
    for field, value in watcher.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        monkeypatch.setenv(f"PIPELINE_WATCHER_{field.upper()}", text)
    return load_settings()


def task(n: int, try_number: int = 1) -> TaskKey:
    return TaskKey("watched", f"task-{n}", "run-1", -1, try_number)


async def create_pod(
    api: client.CoreV1Api,
    key: TaskKey,
    *,
    run_seconds: float = 0.1,
    exit_code: int = 0,
    pending_seconds: float = 0.0,
    image: str = "busybox:1.36",
    instance: str = "launcher-a",
    init_container: str | None = None,
) -> str:
    """A pod as the launcher makes it (labels + annotations), with simulated timings (which
    an init container, when named, runs by too)."""
    annotations = {
        **pod_annotations(key),
        RUN_SECONDS: str(run_seconds),
        EXIT_CODE: str(exit_code),
        PENDING_SECONDS: str(pending_seconds),
    }
    body = pod_manifest(
        pod_name(key), labels=pod_labels(key, instance), annotations=annotations, image=image
    )
    if init_container is not None:
        body["spec"]["initContainers"] = [{"name": init_container, "image": image}]
    await asyncio.to_thread(api.create_namespaced_pod, "default", body)
    return pod_name(key)


async def pod_names(api: client.CoreV1Api) -> set[str]:
    pods = await asyncio.to_thread(api.list_namespaced_pod, "default")
    return {pod.metadata.name for pod in pods.items}


async def delete_pod(api: client.CoreV1Api, name: str) -> None:
    await asyncio.to_thread(api.delete_namespaced_pod, name, "default")


async def events(settings: Settings) -> list[TaskEvent]:
    return [orjson.loads(r.value) for r in await read_all(settings, settings.topic.events)]


def by_task(found: list[TaskEvent]) -> dict[TaskKey, list[TaskEvent]]:
    grouped: dict[TaskKey, list[TaskEvent]] = {}
    for event in found:
        grouped.setdefault(TaskKey.from_wire(event["key"]), []).append(event)
    return grouped


def terminal(found: list[TaskEvent], key: TaskKey) -> TaskEvent | None:
    ends = [e for e in by_task(found).get(key, []) if e["state"] in TERMINAL_STATES]
    return ends[0] if ends else None


async def wait_for_events(
    settings: Settings,
    done: Callable[[list[TaskEvent]], bool],
    timeout_s: float = 30.0,
) -> list[TaskEvent]:
    """Read the events topic until `done(events)` holds (fails on timeout)."""
    async with asyncio.timeout(timeout_s):
        while True:
            found = await events(settings)
            if done(found):
                return found
            await asyncio.sleep(0.2)


async def wait_for_ends(
    settings: Settings, keys: list[TaskKey], timeout_s: float = 30.0
) -> list[TaskEvent]:
    return await wait_for_events(
        settings, lambda found: all(terminal(found, k) for k in keys), timeout_s
    )


@contextlib.asynccontextmanager
async def watcher_running(settings: Settings, *, ready: bool = True) -> AsyncIterator[WatcherStage]:
    """The stage in this process (the emulator shares the loop; kube calls run in threads).

    With `ready`, waits until the watch has heard from the API, so later changes are seen live.
    """
    async with runtime.running(WatcherStage(settings), stop_timeout_s=15) as stage:
        if ready:
            await eventually(lambda: _ready(stage), timeout_s=15, interval_s=0.05)
        yield stage


async def _ready(stage: WatcherStage) -> bool:
    return stage.ready


class WatcherProcess:
    """`pipeline run watcher` as a child process, to be killed with SIGKILL."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pipeline", "run", "watcher", env=dict(os.environ),
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                return await self.process.wait()
        except TimeoutError:
            await self.kill()
            return None


def ids_per_fact(found: list[TaskEvent]) -> dict[tuple[str, str], set[str]]:
    """Event ids per (pod, state): one fact must always carry one id."""
    ids: dict[tuple[str, str], set[str]] = {}
    for event in found:
        fact = (event.get("pod_name", ""), event["state"])
        ids.setdefault(fact, set()).add(event["event_id"])
    return ids


def summary(event: TaskEvent | None) -> tuple[Any, ...]:
    assert event is not None
    return event["state"], event.get("reason"), event.get("exit_code")


async def a_failed_end_with_a_slow_log_read(
    watcher: WatcherProcess, settings: Settings, emulator: KubeEmulator, api: client.CoreV1Api
) -> TaskEvent:
    """Start `watcher`, then end a pod with a failure whose log read takes 8 s: returns its
    terminal event, published while its finishing (log, launch record) is still under way."""
    warmup, failing = task(0), task(1)
    await watcher.start()
    await create_pod(api, warmup)
    await wait_for_ends(settings, [warmup])
    await create_pod(api, failing, run_seconds=1.0, exit_code=3)
    emulator.faults.update(latency_seconds=8.0)  # the log read takes that long
    ended = terminal(await wait_for_ends(settings, [failing], timeout_s=60), failing)
    assert ended is not None and ended["state"] == "failed"
    assert not await kept_for(settings, failing), "finished already"
    return ended


async def kept_for(settings: Settings, key: TaskKey) -> bool:
    """Its log on the logs topic and its `finished` record on the launch ledger."""
    logs = [decode_task_log(r.value) for r in await read_all(settings, settings.topic.logs)]
    records = [launches.decode_record(r.value)
               for r in await read_all(settings, settings.topic.launches)]  # fmt: skip
    return any(TaskKey.from_wire(log["key"]) == key for log in logs) and any(
        r is not None and TaskKey.from_wire(r["key"]) == key and r["status"] == "finished"
        for r in records
    )
