"""Helpers for launcher tests: settings, publishing, reading events, the stage in-process,
and a view of the cluster through the emulator's eyes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from kubernetes import client

from pipeline import launches, messages, runtime
from pipeline.config import Settings
from pipeline.kafka import make_producer, send_all, started
from pipeline.launcher.stage import LauncherStage
from pipeline.messages import TaskEvent, TaskKey
from pipeline.pods import key_from_annotations, managed_selector
from pipeline.sandbox.kube import KubeEmulator
from tests.fixtures.kafka import read_records
from tests.fixtures.polling import eventually

SetEnv = Callable[..., Settings]

ALLOWED = ["airflow", "tasks", "run"]


def request(key: TaskKey, **optional: Any) -> messages.TaskRequest:
    argv = [*ALLOWED, key.dag_id, key.task_id, key.run_id]
    return messages.make_request(key, argv, "kubernetes", **optional)


async def publish(settings: Settings, requests: list[messages.TaskRequest]) -> None:
    producer = make_producer(settings.kafka, "test-producer")
    async with started(producer, settings.kafka):
        await send_all(
            producer,
            [
                (settings.topic.kubernetes, TaskKey.from_wire(r["key"]).partition_key,
                 messages.encode(r))
                for r in requests
            ],
        )  # fmt: skip


async def publish_raw(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(settings.kafka, "test-producer")
    async with started(producer, settings.kafka):
        await send_all(producer, [(topic, k, v) for k, v in records])


def managed_pods(core_v1: client.CoreV1Api) -> list[dict[str, Any]]:
    """The project's pods, as the API lists them (blocking: run it in a thread)."""
    response = core_v1.list_namespaced_pod(
        "default", label_selector=managed_selector(), _preload_content=False
    )
    items: list[dict[str, Any]] = orjson.loads(response.data)["items"]
    return items


async def read_events(settings: Settings, count: int, timeout_s: float = 60) -> list[TaskEvent]:
    records = await read_records(settings, settings.topic.events, count, timeout_s)
    return [messages.decode_event(r.value) for r in records]


async def ready(stage: LauncherStage) -> bool:
    return stage.ready


@asynccontextmanager
async def launcher_run(settings: Settings) -> AsyncIterator[LauncherStage]:
    """The stage in this process until the block ends, then stopped like a SIGTERM would."""
    async with runtime.running(LauncherStage(settings), stop_timeout_s=30) as stage:
        await eventually(lambda: ready(stage), timeout_s=30, interval_s=0.02)
        yield stage


class ClusterView:
    """What the emulator saw of our pods: the most unfinished at once, and finished keys.

    With `reporting`, it also plays the watcher: each pod that finishes gets a terminal
    TaskEvent on the events topic and a `finished` record in the launch ledger, which is how
    the launcher learns there is room again.
    """

    TERMINAL = ("Succeeded", "Failed")

    def __init__(self, emulator: KubeEmulator) -> None:
        self.unfinished: set[str] = set()
        self.max_unfinished = 0
        self.finished: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._remove = emulator.store.add_listener(self._on_event)

    def _on_event(self, event: Any) -> None:
        name = event.obj["metadata"]["name"]
        phase = (event.obj.get("status") or {}).get("phase")
        if event.type == "DELETED" or phase in self.TERMINAL:
            if name in self.unfinished:
                self.unfinished.discard(name)
                self.finished.put_nowait(event.obj)
            return
        self.unfinished.add(name)
        self.max_unfinished = max(self.max_unfinished, len(self.unfinished))

    @asynccontextmanager
    async def reporting(self, settings: Settings) -> AsyncIterator[None]:
        producer = make_producer(settings.kafka, "test-watcher")
        async with started(producer, settings.kafka):
            task = asyncio.create_task(self._report(producer, settings))
            try:
                yield
            finally:
                task.cancel()

    async def _report(self, producer: Any, settings: Settings) -> None:
        while True:
            pod = await self.finished.get()
            key = key_from_annotations(pod["metadata"].get("annotations"))
            assert key is not None
            event = messages.make_event(
                key, "watcher", messages.State.SUCCESS, executor="kubernetes",
                pod_name=pod["metadata"]["name"], namespace=pod["metadata"]["namespace"],
            )  # fmt: skip
            await send_all(
                producer, [(settings.topic.events, key.partition_key, messages.encode(event))]
            )
            finished = launches.make_record(
                key, launches.LaunchStatus.FINISHED, "test-watcher",
                pod_name=pod["metadata"]["name"], reason="success",
            )  # fmt: skip
            await launches.write(producer, settings.topic.launches, [finished])

    def close(self) -> None:
        self._remove()
