"""What follows a try's end on its pod, in this order: its log kept, its `finished` launch
record acknowledged, then the pod deleted if the cleanup policy says so.

The order is the once-per-try guarantee: a deleted pod's name is free again, and only the
launch ledger then tells a launcher that the try already ran (the `finished` record is also
what frees the try's launcher slot). None of it is on the watch's path: the terminal event
is published and acknowledged first, and the rest is handed to a background loop that takes
everything queued at once, so its log reads run concurrently, its records share one produce
request, and its pods go in one delete-collection call, selected by their try labels and an
ended phase. That call carries no uid precondition, and needs none: a try's label is on no
other pod, and the try's `finished` record, written before it, keeps a launcher from making
its pod again. A pod the call does not take (one still running as its cancel takes effect,
one made before pods carried the label) is deleted on its own, uid precondition and all. A
full backlog makes the watch wait. Work not done at a stop or crash is not lost: the pods
handed over and not finished yet go into the watch's checkpoint (`unfinished`), and a
restart finishes them (one whose end came after the checkpoint is seen ending again); the
sweep also finds finished pods the policy deletes. A failed write is retried with backoff
for about a minute first, so a broker away for a while delays the rest and loses nothing.
A second log record or launch record of one try is absorbed downstream, and a second
delete is a 404.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from pipeline import launches
from pipeline.messages import State
from pipeline.pods import try_label
from pipeline.runtime import next_unless_stopped, sleep_unless_stopped
from pipeline.watcher import metrics
from pipeline.watcher.logcapture import LogCapture
from pipeline.watcher.translate import PodObservation
from pipeline.watcher.watch_loop import NotAllowed, WatchUnavailable

log = logging.getLogger(__name__)

Delete = Callable[[str, str], Awaitable[bool]]
DeleteEnded = Callable[[Sequence[str]], Awaitable[set[str]]]
_BACKLOG = 64  # batches queued before the watch waits
_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # a minute before the next start's turn


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


class Finisher:
    """Finishes ended tries off the watch's path: `later` queues, `run` works the queue."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        ledger_topic: str,
        capture: LogCapture | None,
        delete: Delete,
        delete_ended: DeleteEnded,
        policy: CleanupPolicy,
    ) -> None:
        self._producer = producer
        self._ledger_topic = ledger_topic
        self._capture = capture
        self._delete = delete
        self._delete_ended = delete_ended
        self._collection_allowed = True  # until the API says otherwise (an older RBAC)
        self.policy = policy
        self._queue: asyncio.Queue[list[PodObservation]] = asyncio.Queue(_BACKLOG)
        self._stopped = False  # set once `run` returned: nothing would take from the queue
        self._unfinished: dict[str, PodObservation] = {}  # handed over, not finished, by uid

    async def later(self, ended: Sequence[PodObservation]) -> None:
        """Finish these in the background (`run`); waits only while the backlog is full."""
        batch = [o for o in ended if o.terminal]
        self._unfinished.update((o.uid, o) for o in batch)
        if batch and not self._stopped:
            await self._queue.put(batch)

    def unfinished(self) -> list[PodObservation]:
        """Ended pods handed over and not finished yet: a checkpoint carries them."""
        return list(self._unfinished.values())

    async def run(self, stopping: asyncio.Event) -> None:
        """Finish what `later` queued, everything queued so far at once; at a stop, what is
        queued then, and no more (what comes later is left to the sweep)."""
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while (batch := await next_unless_stopped(self._queue, stop)) is not None:
                await self._finish_queued(batch, stopping)
            self._stopped = True  # from here `later` queues nothing: the last drain is final
            if not self._queue.empty():
                await self._finish_queued([], stopping)
        finally:
            self._stopped = True
            stop.cancel()

    async def _finish_queued(self, batch: list[PodObservation], stopping: asyncio.Event) -> None:
        """Finish `batch` and all queued behind it, retried with backoff while the writes
        fail (Kafka away); after the last try the pods stay unfinished for the checkpoint."""
        for delay_s in (*_RETRY_DELAYS_S, None):
            while not self._queue.empty():
                batch.extend(self._queue.get_nowait())
            try:
                await self.finish(batch)
                return
            except Exception as exc:
                if delay_s is None or stopping.is_set():
                    log.exception("finishing %d pods failed; the next start retries", len(batch))
                    return
                log.warning(
                    "finishing %d pods failed (%r); retrying in %gs", len(batch), exc, delay_s
                )
            metrics.FINISH_RETRIES.inc()
            await sleep_unless_stopped(stopping, delay_s)
            batch = [o for o in batch if o.uid in self._unfinished]  # not the sweep's since

    async def finish(self, ended: Sequence[PodObservation], *, clean_up: bool = True) -> None:
        """Keep the logs, write the launch records, then delete the pods the policy picks."""
        ended = [o for o in ended if o.terminal]
        if not ended:
            return
        if self._capture is not None:
            await self._capture.keep(ended)
        records = [
            launches.make_record(
                o.key, launches.LaunchStatus.FINISHED, "watcher", pod_name=o.name,
                reason=o.state.value,
            )
            for o in ended
        ]  # fmt: skip
        await launches.write(self._producer, self._ledger_topic, records)
        for observation in ended:  # the rest is the sweep's to retry
            self._unfinished.pop(observation.uid, None)
        if clean_up:
            await self._delete_all([o for o in ended if self.policy.should_delete(o)])

    async def _delete_all(self, doomed: list[PodObservation]) -> None:
        """Delete ended pods by their try labels, a call per many; each one that call did
        not take (a pod still running as its cancel takes effect, a pod made before the
        try label) is deleted on its own."""
        if not doomed:
            return
        deleted: set[str] = set()
        try:
            if self._collection_allowed:
                deleted = await self._delete_ended([try_label(o.key) for o in doomed])
        except NotAllowed as exc:
            self._collection_allowed = False
            log.warning(
                "deleting pods as a collection is not allowed (%s): finished pods are deleted "
                "one by one from now on; grant `deletecollection` on pods to batch them",
                exc,
            )
        except WatchUnavailable as exc:
            log.warning("could not delete %d pods at once (%s); one by one", len(doomed), exc)
        metrics.PODS_DELETED.labels("finished").inc(len(deleted))
        left = [o for o in doomed if o.name not in deleted]
        await asyncio.gather(*(self.delete(o, why="finished") for o in left))

    async def delete(self, observation: PodObservation, *, why: str) -> None:
        """Delete a pod; a failure is logged and left to the next sweep."""
        try:
            if await self._delete(observation.name, observation.uid):
                metrics.PODS_DELETED.labels(why).inc()
        except WatchUnavailable as exc:
            log.warning("could not delete pod %s (%s); the sweep will retry", observation.name, exc)
