"""A finished pod's log, kept on the logs topic before the pod is deleted.

The watcher publishes a pod's terminal event, then reads the tail of its log through the API
and publishes it as a TaskLog (bounded, masked, on the task's partition), and only then may
the cleanup policy delete the pod. A pod already gone has no log left to read: that is
logged and skipped. A re-seen terminal state (relist, second replica) captures again, which
compaction and the reducer's index absorb (the newest record of a try wins).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from pipeline import tasklogs
from pipeline.podlogs import PodLogs, PodLogUnavailable
from pipeline.watcher import metrics
from pipeline.watcher.translate import EXECUTOR, PodObservation
from pipeline.watcher.watch_loop import WatchUnavailable

log = logging.getLogger(__name__)


class LogCapture:
    def __init__(
        self, pods: PodLogs, producer: AIOKafkaProducer, topic: str, max_bytes: int
    ) -> None:
        self.pods = pods
        self.producer = producer
        self.topic = topic
        self.max_bytes = max_bytes

    async def keep(self, finished: Sequence[PodObservation]) -> None:
        """Read the finished pods' logs concurrently, then publish them in one batch."""
        if not finished:
            return
        records = [r for r in await asyncio.gather(*map(self._read, finished)) if r is not None]
        await tasklogs.publish(self.producer, self.topic, records)
        metrics.LOGS.labels("kept").inc(len(records))

    async def _read(self, pod: PodObservation) -> tasklogs.TaskLog | None:
        try:
            # every line is at least one byte: this many lines hold the newest max_bytes
            data = await self.pods.read(pod.name, self.max_bytes, pod.log_source)
        except (PodLogUnavailable, ApiException, WatchUnavailable, HTTPError, OSError) as exc:
            metrics.LOGS.labels("unavailable").inc()
            log.info("no log kept for pod %s: %s", pod.name, exc, extra={"task": str(pod.key)})
            return None
        return tasklogs.make_task_log(
            pod.key, EXECUTOR, pod.name, data, max_bytes=self.max_bytes
        )  # already masked by the reader
