"""What the watch sees, told to `tasks.events`: the watch handler of one namespace.

Each change is translated, checked against the ledger (one event per pod and state, never a
step back), published and acknowledged, and only then remembered; pods whose try ended are
then handed to the finisher (log, launch record, cleanup). The resourceVersion it reports as
safe is always one whose events are all acknowledged, which is what makes the checkpoint
at-least-once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from pipeline.watcher import metrics
from pipeline.watcher.checkpoint import Checkpoint
from pipeline.watcher.finish import Finisher
from pipeline.watcher.ledger import PodLedger
from pipeline.watcher.translate import PodObservation, observe, task_key
from pipeline.watcher.watch_loop import Pod

Publish = Callable[[Sequence[PodObservation]], Awaitable[None]]


class PodReporter:
    """The WatchHandler of one namespace: publishes, remembers, hands ended tries on."""

    def __init__(
        self,
        publish: Publish,
        finisher: Finisher,
        ledger: PodLedger | None = None,
        resource_version: str | None = None,
    ) -> None:
        self._publish = publish
        self.finisher = finisher
        self.ledger = ledger or PodLedger()
        self.resource_version = resource_version
        self.synced = asyncio.Event()  # set once the API answered a list or a watch frame

    def checkpoint(self) -> Checkpoint | None:
        """The position, with the pods a restart must still answer for: those whose end was
        not reported, and those whose end was but whose finishing was not done."""
        if self.resource_version is None:
            return None
        return Checkpoint(
            self.resource_version, self.ledger.open_pods() + self.finisher.unfinished()
        )

    async def listed(self, pods: list[Pod], resource_version: str) -> None:
        observed = [o for o in map(_observe, pods) if o is not None]
        news = self.ledger.reconcile(observed)
        await self._publish(news)
        for observation in [*news, *observed]:
            self.ledger.record(observation)
        self.ledger.retain(o.uid for o in observed)
        await self.finisher.later(news)
        self.resource_version = resource_version
        self.synced.set()

    async def changed(self, changes: Sequence[tuple[str, Pod]]) -> None:
        """A batch of watch changes: one publish (one broker round trip) for all their news.

        Then each is remembered in stream order, pods whose DELETED frame came are forgotten,
        and the tries that ended go to the finisher, in the background.
        """
        observed: list[tuple[PodObservation, bool]] = []
        for kind, pod in changes:
            observation = _observe(pod, deleted=kind == "DELETED")
            if observation is not None:
                observed.append((observation, kind == "DELETED"))
        news = self.ledger.news_among([o for o, _ in observed])
        await self._publish(news)
        for observation, deleted in observed:
            self.ledger.record(observation)
            if deleted:
                self.ledger.forget(observation.uid)
        await self.finisher.later(news)

    async def progressed(self, resource_version: str) -> None:
        self.resource_version = resource_version
        self.synced.set()

    async def report(self, observation: PodObservation, *, clean_up: bool = True) -> None:
        """A pod the sweep found: publish if news, remember, and finish it now if its end is
        news or the policy deletes it (a finished pod still there is one whose finishing did
        not complete)."""
        news = self.ledger.news(observation)
        if news:
            await self._publish([observation])
        self.ledger.record(observation)
        if news or (clean_up and self.finisher.policy.should_delete(observation)):
            await self.finisher.finish([observation], clean_up=clean_up)


def _observe(pod: Pod, *, deleted: bool = False) -> PodObservation | None:
    observation = observe(pod, deleted=deleted)
    if observation is None:
        metrics.IGNORED.labels("unmanaged" if task_key(pod) is None else "unknown_phase").inc()
    return observation
