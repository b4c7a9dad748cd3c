"""What the watch sees, told to `tasks.events`: the watch handler of one namespace.

Each change is translated, checked against the ledger (one event per pod and state, never a
step back), published and acknowledged, and only then remembered; finished pods are then
deleted as the cleanup policy says. The resourceVersion it reports as safe is always one
whose events are all acknowledged, which is what makes the checkpoint at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pipeline.messages import State
from pipeline.watcher import metrics
from pipeline.watcher.checkpoint import Checkpoint
from pipeline.watcher.ledger import PodLedger
from pipeline.watcher.translate import PodObservation, observe, task_key
from pipeline.watcher.watch_loop import Pod, WatchUnavailable

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[PodObservation]], Awaitable[None]]
Delete = Callable[[str, str], Awaitable[bool]]


@dataclass(frozen=True)
class CleanupPolicy:
    """Airflow's `delete_worker_pods` / `delete_worker_pods_on_failure`."""

    delete_pods: bool = True
    delete_pods_on_failure: bool = False

    def should_delete(self, pod: PodObservation) -> bool:
        if not pod.terminal or not self.delete_pods:
            return False
        cancelled = pod.state is State.CANCELLED  # its delete is under way: see it through
        return pod.state is State.SUCCESS or cancelled or self.delete_pods_on_failure


class PodReporter:
    """The WatchHandler of one namespace: publishes, remembers, cleans up."""

    def __init__(
        self,
        publish: Publish,
        delete: Delete,
        policy: CleanupPolicy,
        ledger: PodLedger | None = None,
        resource_version: str | None = None,
    ) -> None:
        self._publish = publish
        self._delete = delete
        self.policy = policy
        self.ledger = ledger or PodLedger()
        self.resource_version = resource_version
        self.synced = asyncio.Event()  # set once the API answered a list or a watch frame

    def checkpoint(self) -> Checkpoint | None:
        if self.resource_version is None:
            return None
        return Checkpoint(self.resource_version, self.ledger.open_pods())

    async def listed(self, pods: list[Pod], resource_version: str) -> None:
        observed = [o for o in map(_observe, pods) if o is not None]
        news = self.ledger.reconcile(observed)
        await self._publish(news)
        for observation in [*news, *observed]:
            self.ledger.record(observation)
        self.ledger.retain(o.uid for o in observed)
        for observation in news:
            await self.clean_up(observation)
        self.resource_version = resource_version
        self.synced.set()

    async def changed(self, changes: Sequence[tuple[str, Pod]]) -> None:
        """A batch of watch changes: one publish (one broker round trip) for all their news.

        Then each is remembered in stream order, pods whose DELETED frame came are forgotten,
        and the newest observation of each pod still there goes to the clean-up policy,
        concurrently (each delete is an API call; the policy picks the finished ones).
        """
        observed: list[tuple[PodObservation, bool]] = []
        for kind, pod in changes:
            observation = _observe(pod, deleted=kind == "DELETED")
            if observation is not None:
                observed.append((observation, kind == "DELETED"))
        await self._publish(self.ledger.news_among([o for o, _ in observed]))
        for observation, deleted in observed:
            self.ledger.record(observation)
            if deleted:
                self.ledger.forget(observation.uid)
        gone = {o.uid for o, deleted in observed if deleted}
        still_there = {o.uid: o for o, _ in observed if o.uid not in gone}
        await asyncio.gather(*(self.clean_up(o) for o in still_there.values()))

    async def progressed(self, resource_version: str) -> None:
        self.resource_version = resource_version
        self.synced.set()

    async def report(self, observation: PodObservation, *, clean_up: bool = True) -> None:
        """Publish if news, remember, and delete the pod if it finished and policy says so."""
        if self.ledger.news(observation):
            await self._publish([observation])
        self.ledger.record(observation)
        if clean_up:
            await self.clean_up(observation)

    async def clean_up(self, observation: PodObservation) -> None:
        if self.policy.should_delete(observation):
            await self.delete(observation, why="finished")

    async def delete(self, observation: PodObservation, *, why: str) -> None:
        """Delete a pod; a failure is logged and left to the next sweep."""
        try:
            if await self._delete(observation.name, observation.uid):
                metrics.PODS_DELETED.labels(why).inc()
        except WatchUnavailable as exc:
            log.warning("could not delete pod %s (%s); the sweep will retry", observation.name, exc)


def _observe(pod: Pod, *, deleted: bool = False) -> PodObservation | None:
    observation = observe(pod, deleted=deleted)
    if observation is None:
        metrics.IGNORED.labels("unmanaged" if task_key(pod) is None else "unknown_phase").inc()
    return observation
