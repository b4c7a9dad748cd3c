"""The watcher stage: one resumable watch, sweep and checkpoint per namespace.

Replicas run all-active: every replica watches every managed pod and publishes what it
sees. Nothing is lost when one dies, and the duplicates cost nothing: an event's id is the
pod uid and the state, so the reducer drops the second copy by id (and any late step
backwards by its monotonic state machine). Deletes race harmlessly (404 is success).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from kubernetes.client import CoreV1Api

from pipeline import runtime
from pipeline.config import ConfigError, Settings
from pipeline.kafka import make_producer, send_all, started
from pipeline.messages import encode
from pipeline.podlogs import PodLogs
from pipeline.pods import managed_selector
from pipeline.runtime import Stage, guard, sleep_unless_stopped
from pipeline.watcher import kube, metrics
from pipeline.watcher.checkpoint import CheckpointStore, scope_key
from pipeline.watcher.cleanup import Sweeper
from pipeline.watcher.finish import CleanupPolicy, Finisher
from pipeline.watcher.ledger import PodLedger
from pipeline.watcher.logcapture import LogCapture
from pipeline.watcher.reporter import PodReporter, Publish
from pipeline.watcher.translate import PodObservation
from pipeline.watcher.watch_loop import Backoff, list_then_watch

log = logging.getLogger(__name__)


@dataclass
class NamespaceWatch:
    """One namespace's watch: its checkpoint key, reporter and running tasks."""

    namespace: str
    key: bytes
    reporter: PodReporter
    store: CheckpointStore
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    saved: str | None = None

    async def save(self) -> None:
        """Checkpoint the reporter's position if it moved (all its events are acknowledged)."""
        checkpoint = self.reporter.checkpoint()
        if checkpoint is None or checkpoint.resource_version == self.saved:
            return
        await self.store.save(self.key, checkpoint)
        self.saved = checkpoint.resource_version
        metrics.CHECKPOINTS.labels(self.namespace).inc()

    async def keep_checkpoint(self, stopping: asyncio.Event, interval_s: float) -> None:
        self.saved = self.reporter.resource_version
        while not stopping.is_set():
            await sleep_unless_stopped(stopping, interval_s)
            if not stopping.is_set():
                await self.save()


class WatcherStage(Stage):
    name = "watcher"

    def selector(self) -> str:
        watcher = self.settings.watcher
        return managed_selector(None if watcher.adopt_orphans else self.settings.runtime.instance)

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self.settings
        producer = make_producer(settings.kafka, "watcher")
        async with started(producer, settings.kafka):
            store = CheckpointStore(settings.kafka, settings.topic.watcher_checkpoints, producer)
            core = kube.core_v1(settings.kube)
            watches = [
                await self._start(namespace, core, store, producer, stopping)
                for namespace in settings.watcher.namespaces or [settings.kube.namespace]
            ]
            tasks = [task for watch in watches for task in watch.tasks]
            readiness = asyncio.create_task(self._ready_once_synced(watches))
            try:
                await _until_stopped_or_failed(tasks, stopping)
            finally:
                stopping.set()
                readiness.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for watch in watches:
                    await watch.save()
            core.api_client.close()

    async def _ready_once_synced(self, watches: list[NamespaceWatch]) -> None:
        """Ready once every namespace's watch has heard from the API."""
        await asyncio.gather(*(watch.reporter.synced.wait() for watch in watches))
        self.ready = True

    async def _start(
        self,
        namespace: str,
        core: CoreV1Api,
        store: CheckpointStore,
        producer: AIOKafkaProducer,
        stopping: asyncio.Event,
    ) -> NamespaceWatch:
        settings = self.settings
        watcher = settings.watcher
        api = kube.PodApi(
            core, namespace, self.selector(), settings.kube.request_timeout_s,
            watcher.watch_timeout_s,
        )  # fmt: skip
        key = scope_key(api.server, namespace, api.selector)
        saved = await store.load(key)
        capture = (
            LogCapture(PodLogs(core, namespace, settings.kube.request_timeout_s), producer,
                       settings.topic.logs, settings.logs.max_bytes)
            if watcher.capture_logs else None
        )  # fmt: skip
        finisher = Finisher(
            producer, settings.topic.launches, capture, api.delete, api.delete_ended,
            CleanupPolicy(watcher.delete_pods, watcher.delete_pods_on_failure),
        )  # fmt: skip
        reporter = PodReporter(
            _publisher(producer, settings.topic.events),
            finisher,
            PodLedger(saved.open_pods if saved else ()),
            saved.resource_version if saved else None,
        )
        await finisher.later(saved.open_pods if saved else [])  # the ended ones not finished
        log.info("watching pods", extra={"namespace": namespace, "selector": api.selector,
                 "resume_from": reporter.resource_version})  # fmt: skip
        backoff = Backoff(watcher.reconnect_backoff_s, watcher.reconnect_backoff_max_s)
        sweeper = Sweeper(api, reporter, pending_timeout_s=watcher.pending_timeout_s,
                          batch=watcher.pending_check_batch)  # fmt: skip
        watch = NamespaceWatch(namespace, key, reporter, store)
        rv = reporter.resource_version
        watch.tasks = [
            guard(list_then_watch(api, reporter, stopping, resource_version=rv, backoff=backoff),
                  f"watch-{namespace}", stopping),
            guard(finisher.run(stopping), f"finish-{namespace}", stopping),
            guard(sweeper.run(stopping, watcher.pending_check_interval_s), f"sweep-{namespace}",
                  stopping),
            guard(watch.keep_checkpoint(stopping, watcher.checkpoint_interval_s),
                  f"checkpoint-{namespace}", stopping),
        ]  # fmt: skip
        return watch


def _publisher(producer: AIOKafkaProducer, topic: str) -> Publish:
    """Events, acknowledged before the reporter remembers them."""

    async def publish(observations: Sequence[PodObservation]) -> None:
        if not observations:
            return
        await send_all(
            producer, [(topic, o.key.partition_key, encode(o.to_event())) for o in observations]
        )
        for observation in observations:
            metrics.EVENTS.labels(observation.state.value).inc()
            log.info("task %s", observation.state.value, extra={
                "task": str(observation.key), "pod": observation.name,
                "reason": observation.reason, "resource_version": observation.resource_version,
            })  # fmt: skip

    return publish


async def _until_stopped_or_failed(
    tasks: list[asyncio.Task[None]], stopping: asyncio.Event
) -> None:
    """Return when asked to stop; raise when a task that should run forever ended first."""
    stop = asyncio.ensure_future(stopping.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    for task in done:
        if task is not stop and not stopping.is_set():
            task.result()  # re-raises a crash
            raise RuntimeError(f"{task.get_name()} ended before the stage was stopped")


def main(settings: Settings) -> int:
    """`pipeline run watcher`."""
    if not settings.watcher.adopt_orphans and not settings.runtime.instance:
        raise ConfigError(
            "PIPELINE_WATCHER_ADOPT_ORPHANS=false needs PIPELINE_RUNTIME_INSTANCE "
            "(the launcher instance whose pods to watch)"
        )
    return runtime.main(WatcherStage(settings))
