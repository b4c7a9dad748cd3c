"""The periodic sweep: pods stuck Pending past the timeout, and finished pods left behind.

Airflow's `_check_worker_pods_pending_timeout`, plus a retry of the cleanup policy: a pod
whose delete failed, or whose terminal event was reported just before a crash, is found
here and deleted after its terminal event is (re-)published. Each pass reads at most
`batch` pods per phase and pages on from where the previous pass stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pipeline.runtime import sleep_unless_stopped
from pipeline.watcher import metrics
from pipeline.watcher.kube import PodApi
from pipeline.watcher.reporter import PodReporter
from pipeline.watcher.translate import PodObservation, observe, pending_seconds, timed_out
from pipeline.watcher.watch_loop import WatchGone, WatchUnavailable

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(
        self,
        api: PodApi,
        reporter: PodReporter,
        *,
        pending_timeout_s: float,
        batch: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._reporter = reporter
        self._timeout_s = pending_timeout_s
        self._batch = batch
        self._clock = clock
        self._resume: dict[str, str | None] = {}

    async def run(self, stopping: asyncio.Event, interval_s: float) -> None:
        while not stopping.is_set():
            try:
                await self.sweep()
                metrics.SWEEPS.labels(self._api.namespace).inc()
            except (WatchUnavailable, WatchGone) as exc:
                log.warning("sweep of %s skipped: %s", self._api.namespace, exc)
            await sleep_unless_stopped(stopping, interval_s)

    async def sweep(self) -> None:
        """One pass: fail and delete timed-out Pending pods, then apply the cleanup policy."""
        for pod in await self._page("Pending"):
            if pod.terminal:  # failed while pending (e.g. ImagePullBackOff)
                await self._reporter.report(pod)
            elif pending_seconds(pod, self._clock()) > self._timeout_s:
                await self._time_out(pod)
        for phase in self._finished_phases():
            for pod in await self._page(phase):
                await self._reporter.report(pod)

    def _finished_phases(self) -> list[str]:
        policy = self._reporter.finisher.policy
        if not policy.delete_pods:
            return []
        return ["Succeeded", "Failed"] if policy.delete_pods_on_failure else ["Succeeded"]

    async def _time_out(self, pod: PodObservation) -> None:
        failed = timed_out(pod, self._timeout_s)
        log.info(
            "pod %s pending too long; failing its task", pod.name, extra={"task": str(pod.key)}
        )
        await self._reporter.report(failed, clean_up=False)
        await self._reporter.finisher.delete(failed, why="pending_timeout")

    async def _page(self, phase: str) -> list[PodObservation]:
        """Up to `batch` pods in `phase`, continuing the previous pass's paging."""
        token = self._resume.get(phase)
        try:
            listing = await self._api.list(
                field_selector=f"status.phase={phase}", limit=self._batch, resume=token
            )
        except WatchGone:  # the paging token expired: start over
            listing = await self._api.list(
                field_selector=f"status.phase={phase}", limit=self._batch
            )
        self._resume[phase] = listing.more
        return [o for o in map(observe, listing.pods) if o is not None]
