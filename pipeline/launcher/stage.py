"""The launcher stage: `tasks.kubernetes` in, worker pods and `launched`/`failed` events out.

Airflow's `KubernetesExecutor.sync` + `run_next`, made durable. Each fetch takes at most
`creation_batch_size` requests (fewer when `parallelism` leaves less room) and builds their
pods; a create starts only while fewer than `creation_batch_size` creations are undecided. So
the batch limit is a sliding cycle rather than a barrier: the API sees at most that many
creations at once (and the client pool at most `max_concurrent_creates` calls), yet a slow
create holds back no other, and the next batch is fetched and built while creates run. A
transient failure does not hold a slot: the launch is rescheduled after its backoff and takes
a slot again for its next attempt. When launched-but-unfinished pods fill `parallelism`, the
partitions are paused (polling continues, so the group membership stays alive) until the
launch ledger, which the launcher follows anyway, records a try finished (the watcher writes
that once a pod has ended): the busiest topic, `tasks.events`, is not read here at all.

A request's offset is committed only after its event (or dead letter) is acknowledged, and
only up to the highest contiguous finished offset of its partition, so a SIGKILL at any
moment re-delivers, and a re-delivered request meets its own pod's name: 409, `launched`
again, with the same event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from kubernetes.config import ConfigException

from pipeline import launches, logs, runtime, tasklogs
from pipeline.config import Settings
from pipeline.kafka import all_started, fetch_highwaters, make_consumer, make_producer
from pipeline.launcher import metrics
from pipeline.launcher.builder import PodSpecBuilder
from pipeline.launcher.cancels import CancelBook, read_to_end
from pipeline.launcher.cancels import follow as follow_cancels
from pipeline.launcher.errors import LaunchError, PodRejected, RetryLater, retry_delay
from pipeline.launcher.inflight import InFlight, position_at_end
from pipeline.launcher.kube_client import TERMINAL_PHASES, PodApi, PodEnd
from pipeline.launcher.merge import JsonObj
from pipeline.launcher.offsets import OffsetTracker
from pipeline.launches import LaunchLedger, LaunchStatus
from pipeline.messages import (
    CancelInfo,
    InvalidMessage,
    State,
    TaskEvent,
    TaskKey,
    TaskRequest,
    decode_request,
    encode,
    epoch_s,
    looks_like_control,
    make_cancelled,
    make_dead_letter,
    make_event,
)
from pipeline.pods import managed_selector, pod_name

log = logging.getLogger(__name__)

SOURCE = "launcher"
_PAUSED_WAIT_S = 0.5


@dataclass
class Launch:
    """One request on its way to a pod; `retries` counts the attempts already retried."""

    tp: TopicPartition
    offset: int
    key: TaskKey
    pod: JsonObj
    retries: int = 0
    cancel: CancelInfo | None = None
    recorded: bool = False  # its batch wrote its `launching` record; no lookup before create

    @property
    def name(self) -> str:
        name: str = self.pod["metadata"]["name"]
        return name


class LauncherStage(runtime.Stage):
    name = "launcher"

    def __init__(self, settings: Settings, api: PodApi | None = None) -> None:
        super().__init__(settings)
        self.builder = PodSpecBuilder.from_settings(settings, self.instance)
        cfg = settings.launcher
        self.api = api or PodApi(settings.kube, cfg.max_concurrent_creates)
        self.in_flight = InFlight()
        self.ledger = LaunchLedger(settings.topic.launches_retention_s)
        self.launching = 0
        self.trackers: dict[TopicPartition, OffsetTracker] = {}
        self.committed: dict[TopicPartition, int] = {}
        self._slots = asyncio.Semaphore(cfg.creation_batch_size)
        self._attempts: set[asyncio.Task[None]] = set()
        self._retries: set[asyncio.Task[None]] = set()
        self._publishes: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        self._background: list[asyncio.Task[None]] = []
        self.cancels = CancelBook()
        self.launches: dict[TaskKey, Launch] = {}
        self._cancel_follower: asyncio.Task[None] | None = None
        self._ledger_lock = asyncio.Lock()

    def health(self) -> tuple[bool, str]:
        """Unhealthy once a task that must run forever ended: without the ledger follower
        no slot is freed, without the committer every restart re-reads everything."""
        for task in self._background:
            if task.done():
                return False, f"background task {task.get_name()} stopped"
        return True, "ok"

    async def run(self, stopping: asyncio.Event) -> None:
        s = self.settings
        self._room = asyncio.Event()
        self._stopping = stopping
        self.producer = make_producer(s.kafka, "launcher")
        controls = make_consumer(
            s.kafka, group_id=None, client_id="launcher-controls", follower=True
        )
        self._ledger_reader = make_consumer(
            s.kafka, group_id=None, client_id="launcher-ledger", follower=True
        )
        requests = make_consumer(
            s.kafka,
            group_id=s.launcher.group_id,
            client_id="launcher",
            session_timeout_ms=s.launcher.session_timeout_ms,
        )
        try:
            async with all_started(s.kafka, self.producer, controls, self._ledger_reader, requests):
                await read_to_end(controls, s.topic.control, self.cancels)
                self._cancel_follower = runtime.guard(
                    follow_cancels(controls, self.cancels, self._cancel_in_flight),
                    "launcher-controls",
                )
                await self._read_ledger()
                if not await self._adopt_in_flight(stopping):
                    return
                committer = runtime.guard(self._commit_every_interval(requests), "commits")
                ledger = runtime.guard(self._follow_ledger(), "launch-ledger")
                self._background = [self._cancel_follower, committer, ledger]
                # ready once the group has answered (the listener): partitions flow then
                requests.subscribe([s.topic.kubernetes], listener=_Rebalance(self, requests))
                try:
                    await self._consume(requests, stopping)
                    await self._drain()
                    await self._commit(requests)
                finally:
                    for task in (*self._background, *self._retries):
                        task.cancel()
        finally:
            self.api.close()

    async def _adopt_in_flight(self, stopping: asyncio.Event) -> bool:
        """Count pods left unfinished by earlier runs; retries while the API is unavailable."""
        attempt = 0
        while not stopping.is_set():
            try:
                # a pod Pending since before the ledger's horizon is one whose end was told
                # and forgotten (an image that never pulled, kept): it holds no slot
                keys = await self.api.active_tasks(
                    managed_selector(), pending_since=self.ledger.horizon()
                )
            except LaunchError as exc:
                attempt += 1
                delay = retry_delay(exc, attempt, base=1.0, cap=30.0, rng=self._rng)
                log.warning("cannot list pods yet (%s); retrying in %.1fs", exc.reason, delay)
                await runtime.sleep_unless_stopped(stopping, delay)
                continue
            for key in keys:  # a pod whose try is finished in the ledger holds no slot
                if (
                    self.ledger.status(key) is None
                    or self.ledger.status(key) is LaunchStatus.LAUNCHING
                ):
                    self.in_flight.add(key)
            log.info("adopted %d unfinished pods", len(self.in_flight))
            return True
        return False

    # -- the launch ledger -------------------------------------------------------------------

    async def _read_ledger(self) -> None:
        """Read the whole ledger before the first request: every try launched before."""
        topic = self.settings.topic.launches
        partitions = await position_at_end(self._ledger_reader, topic)
        for tp in partitions:
            self._ledger_reader.seek(tp, 0)
        await self._catch_up()
        log.info("launch ledger read", extra={"tries": len(self.ledger)})

    async def _catch_up(self) -> None:
        """Read the ledger up to its high-water as of now (the background reader does the
        same forever; this is for decisions that must not miss a record just written)."""
        reader = self._ledger_reader
        highwaters = await fetch_highwaters(self.settings.kafka, reader.assignment())
        async with self._ledger_lock:
            while not await launches.caught_up(reader, highwaters):
                await self._read_ledger_batch(timeout_ms=100)

    async def _follow_ledger(self) -> None:
        while True:
            async with self._ledger_lock:
                await self._read_ledger_batch(timeout_ms=200)

    async def _read_ledger_batch(self, timeout_ms: int) -> None:
        batch = await self._ledger_reader.getmany(timeout_ms=timeout_ms, max_records=5000)
        freed = False
        for records in batch.values():
            for consumed in records:
                record = launches.decode_record(consumed.value)
                if record is None:
                    continue
                written_s = consumed.timestamp / 1000 if consumed.timestamp > 0 else None
                if self.ledger.apply(record, written_s) is not LaunchStatus.LAUNCHING:
                    freed = self.in_flight.finish(TaskKey.from_wire(record["key"])) or freed
        if freed:
            self._room.set()

    async def _status_now(self, key: TaskKey) -> LaunchStatus | None:
        """The ledger's word on `key` after reading everything written so far."""
        try:
            await self._catch_up()
        except KafkaError as exc:
            raise RetryLater(f"launch ledger unreadable: {exc}") from None
        return self.ledger.status(key)

    async def _record_launching(self, batch: list[Launch]) -> None:
        """Write-ahead: each try's `launching` record is acknowledged before its pod exists.

        A fetched batch is written at once, with one wait for the broker's acks and outside
        the creation slots, so the ledger's round trip costs each launch once and never holds
        a slot. Tries the ledger already knows are left to `_create`; when the write fails,
        each launch writes its own record there (or retries later)."""
        fresh = [launch for launch in batch if self.ledger.status(launch.key) is None]
        try:
            await self._write_launching(fresh)
        except KafkaError as exc:
            log.warning("launch ledger unwritable for a batch (%s); writing each again", exc)
            return
        for launch in fresh:
            launch.recorded = True

    async def _write_launching(self, batch: list[Launch]) -> None:
        records = [
            launches.make_record(launch.key, LaunchStatus.LAUNCHING, SOURCE, pod_name=launch.name)
            for launch in batch
        ]
        await launches.write(self.producer, self.settings.topic.launches, records)
        for record in records:
            self.ledger.apply(record)

    # -- the cycle ---------------------------------------------------------------------------

    async def _consume(self, requests: AIOKafkaConsumer, stopping: asyncio.Event) -> None:
        """Fetch and build a batch, then start each create as soon as a slot is free; the
        next batch is fetched and built while those creates run."""
        cfg = self.settings.launcher
        while not stopping.is_set():
            room = cfg.parallelism - len(self.in_flight) - self.launching
            self._observe(paused=room <= 0)
            if room <= 0:
                await self._wait_for_room(requests)
                continue
            if paused := requests.paused():
                requests.resume(*paused)
            limit = min(cfg.creation_batch_size, room)
            batch = await requests.getmany(timeout_ms=200, max_records=limit)
            taken = [
                launch
                for tp, records in batch.items()
                for record in records
                if (launch := self._take(tp, record)) is not None
            ]
            if taken:
                await self._record_launching(taken)
            for launch in taken:
                await self._slots.acquire()
                self._spawn(self._attempts, self._attempt(launch))
        while self._attempts:
            await asyncio.gather(*list(self._attempts))

    async def _wait_for_room(self, requests: AIOKafkaConsumer) -> None:
        """Paused: keep polling (the group expects it) and wake when a pod finishes."""
        requests.pause(*requests.assignment())
        self._room.clear()
        stray = await requests.getmany(timeout_ms=0)
        for tp, records in stray.items():  # a partition assigned after the pause
            requests.seek(tp, records[0].offset)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), _PAUSED_WAIT_S)

    def _take(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> Launch | None:
        """Begin tracking a record; a Launch when it should become a pod."""
        self._begin(tp, record.offset)
        if looks_like_control(record.value or b"") and self._take_control(tp, record):
            return None
        limit = self.settings.kafka.max_message_bytes
        try:
            request = decode_request(record.value, max_bytes=limit)
        except InvalidMessage as exc:
            metrics.DEAD_LETTERS.inc()
            letter = make_dead_letter(
                record.value, record.key, exc, topic=tp.topic, partition=tp.partition,
                offset=record.offset, timestamp=record.timestamp, stage=self.name,
                max_bytes=limit,
            )  # fmt: skip
            topic = self.settings.topic.dlq
            self._publish(tp, record.offset, topic, record.key, encode(letter))
            return None
        key = TaskKey.from_wire(request["key"])
        if (cancel := self.cancels.get(key)) is not None:  # cancelled before it got here
            self._spawn(self._attempts, self._cancel(tp, record.offset, key, cancel, owned=True))
            return None
        if (expired := self._expired(key, request)) is not None:
            metrics.CREATES.labels("expired").inc()
            self._report(tp, record.offset, self._failed(key, pod_name(key), expired))
            return None
        try:
            pod = self.builder.build(request)
        except PodRejected as exc:
            metrics.CREATES.labels("rejected").inc()
            self._report(tp, record.offset, self._failed(key, pod_name(key), exc.reason))
            return None
        except Exception as exc:  # a bug must fail one task loudly, not stop the stage
            log.exception("unexpected error building the pod", extra={"task": str(key)})
            reason = f"internal error building the pod: {exc!r}"
            self._report(tp, record.offset, self._failed(key, pod_name(key), reason))
            return None
        self.launching += 1
        launch = self.launches[key] = Launch(tp, record.offset, key, pod)
        return launch

    def _expired(self, key: TaskKey, request: TaskRequest) -> str | None:
        """Why a try the ledger does not know is not launched: it was submitted before the
        ledger's horizon, so a record of its launch may have been forgotten."""
        horizon = self.ledger.horizon()
        if horizon is None:
            return None
        submitted_s = epoch_s(request["submitted_at"])
        if submitted_s is None:  # valid by the schema, but not to the parser: age unknown
            return None
        if submitted_s >= horizon or self.ledger.status(key) is not None:
            return None
        days = self.settings.topic.launches_retention_s / 86400
        return (
            f"not launched: submitted at {request['submitted_at']}, before the launch ledger's "
            f"horizon ({days:g} days), so whether this try already ran cannot be told"
        )

    def _take_control(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Handle a cancel from the request stream; False when the record is no control."""
        key = self.cancels.learn(record.value)
        if key is None:
            return False
        cancel = self.cancels.get(key)
        assert cancel is not None
        if (launch := self.launches.get(key)) is not None:  # its launch decides: never a pod
            launch.cancel = cancel
            self._finish(tp, record.offset)
        else:
            self._spawn(self._attempts, self._cancel(tp, record.offset, key, cancel, owned=False))
        return True

    async def _cancel(
        self, tp: TopicPartition, offset: int, key: TaskKey, cancel: CancelInfo, *, owned: bool
    ) -> None:
        """End a cancelled task's pod, if there is one, and report `cancelled` when this
        launcher ended it or owned its request (which then is never launched)."""
        name = pod_name(key)
        with logs.bound(task=str(key), pod=name):
            await self._record_cancelled(key, name, cancel)
            await self._keep_log(key, name)
            end = await self._end_pod(name, cancel)
            if end is None:
                return  # stopping: left uncommitted, handled again after the restart
            outcome = "never_launched" if owned and end is PodEnd.ABSENT else end.value
            metrics.CANCELS.labels(outcome).inc()
            log.info("cancel handled: %s", outcome, extra={"requested_by": cancel["requested_by"]})
            if end is PodEnd.ENDED or (owned and end is PodEnd.ABSENT):
                event = make_cancelled(
                    key, SOURCE, cancel, executor="kubernetes", pod_name=name,
                    namespace=self.api.namespace,
                )  # fmt: skip
                self._report(tp, offset, event)
            else:
                self._finish(tp, offset)

    def _cancel_in_flight(self, key: TaskKey) -> None:
        """A cancel seen on the control topic for a pod already running: end it now (the
        request stream may be paused at `parallelism`); the in-stream copy finds it ending."""
        cancel = self.cancels.get(key)
        if cancel is None or key not in self.in_flight or key in self.launches:
            return
        self._spawn(self._attempts, self._end_in_flight(key, cancel))

    async def _end_in_flight(self, key: TaskKey, cancel: CancelInfo) -> None:
        name = pod_name(key)
        with logs.bound(task=str(key), pod=name):
            await self._record_cancelled(key, name, cancel)
            await self._keep_log(key, name)
            if await self._end_pod(name, cancel) is PodEnd.ENDED:
                metrics.CANCELS.labels("ended").inc()
                event = make_cancelled(
                    key, SOURCE, cancel, executor="kubernetes", pod_name=name,
                    namespace=self.api.namespace,
                )  # fmt: skip
                self._report(None, 0, event)

    async def _record_cancelled(self, key: TaskKey, name: str, cancel: CancelInfo) -> None:
        """The ledger's lasting word that this try is never launched: the cancel book is
        bounded, and a request re-delivered or replayed long after must still find it. Written
        once (the follower and the in-stream copy of one cancel both come here)."""
        if self.ledger.status(key) is LaunchStatus.CANCELLED:
            return
        record = launches.make_record(
            key, LaunchStatus.CANCELLED, SOURCE, pod_name=name, reason=cancel["reason"]
        )
        try:
            await launches.write(self.producer, self.settings.topic.launches, [record])
        except KafkaError as exc:  # the cancel book still holds it while this launcher runs
            log.warning("cancel not recorded in the launch ledger: %s", exc)
            return
        self.ledger.apply(record)

    async def _keep_log(self, key: TaskKey, name: str) -> None:
        """What a pod printed, kept on the logs topic before it is deleted for a cancel (the
        watcher may keep a later version, with what it printed in its grace period)."""
        max_bytes = self.settings.logs.max_bytes
        if (data := await self.api.log_tail(name, max_bytes)) is None:
            return
        record = tasklogs.make_task_log(key, "kubernetes", name, data, max_bytes=max_bytes)
        try:
            await tasklogs.publish(self.producer, self.settings.topic.logs, [record])
        except KafkaError as exc:
            log.warning("log of a cancelled pod not kept: %s", exc)

    async def _end_pod(self, name: str, cancel: CancelInfo) -> PodEnd | None:
        """`PodApi.end`, retried while the API is unavailable; None when stopping first."""
        cfg = self.settings.launcher
        attempt = 0
        while not self._stopping.is_set():
            try:
                return await self.api.end(name, cancel, cfg.cancel_grace_period_s)
            except LaunchError as exc:
                if not exc.retriable:
                    log.error("cannot end the pod of a cancelled task: %s", exc.reason)
                    return PodEnd.ABSENT
                attempt += 1
                delay = retry_delay(
                    exc, attempt, base=cfg.retry_base_s, cap=cfg.retry_max_s, rng=self._rng
                )
                await runtime.sleep_unless_stopped(self._stopping, delay)
        return None

    async def _attempt(self, launch: Launch) -> None:
        """One create attempt in a slot the caller took; decides the launch or schedules
        its retry, and frees the slot either way."""
        with logs.bound(task=str(launch.key), pod=launch.name):
            if launch.cancel is not None:  # cancelled while waiting for a slot or a retry
                self._slots.release()
                self._cancelled(launch)
                return
            try:
                alive = await self._create(launch)
            except LaunchError as exc:
                error: LaunchError | None = exc
            except Exception as exc:  # a bug must fail one task loudly, not wedge its offset
                log.exception("unexpected error creating the pod")
                error = PodRejected(f"internal error: {exc!r}")
            else:
                error = None
            finally:
                self._slots.release()
            if launch.cancel is not None:  # cancelled while the create was under way
                self._cancelled(launch)
                return
            if error is not None:
                self._after_error(launch, error)
                return
            if alive is LaunchStatus.CANCELLED:
                self._decided(launch, alive=False)
                self._skip(launch.tp, launch.offset)
                return
            self._decided(launch, alive is True)
            self._report(launch.tp, launch.offset, self._launched(launch))

    async def _create(self, launch: Launch) -> bool | LaunchStatus:
        """Create the pod once per try: whether it is alive (a 409 pod may have finished long
        ago), or the ledger's status when the try was launched or cancelled before.

        A `launching` record whose pod is gone is read again after catching up with the
        ledger: the watcher writes `finished` before it deletes a pod, so a try with neither
        a pod nor `finished` never got its pod, and only then is it created.
        """
        if launch.recorded:  # its batch wrote the record just now: nothing more to look up
            launch.recorded = False  # a retry after a failed create must look again
            return await self._create_new(launch)
        status = self.ledger.status(launch.key)
        if status is LaunchStatus.LAUNCHING:
            phase = await self.api.phase(launch.name)
            if phase is not None:
                metrics.CREATES.labels("exists").inc()
                return phase not in TERMINAL_PHASES
            status = await self._status_now(launch.key)
        if status is LaunchStatus.FINISHED or status is LaunchStatus.CANCELLED:
            metrics.CREATES.labels(
                "duplicate" if status is LaunchStatus.FINISHED else "cancelled"
            ).inc()
            log.info("try already %s; no pod created", status.value)
            return status
        if status is None:
            try:
                await self._write_launching([launch])
            except KafkaError as exc:
                raise RetryLater(f"launch ledger unwritable: {exc}") from None
        return await self._create_new(launch)

    async def _create_new(self, launch: Launch) -> bool:
        """POST the pod whose `launching` record stands: whether a pod of it is alive."""
        if await self.api.create(launch.pod):
            metrics.CREATES.labels("created").inc()
            return True
        metrics.CREATES.labels("exists").inc()
        phase = await self.api.phase(launch.name)
        return phase is not None and phase not in TERMINAL_PHASES

    def _after_error(self, launch: Launch, exc: LaunchError) -> None:
        cfg = self.settings.launcher
        if exc.retriable and launch.retries < cfg.max_retries:
            if self._stopping.is_set():
                return  # abandoned uncommitted: re-delivered after the restart
            launch.retries += 1
            metrics.CREATES.labels("retried").inc()
            delay = retry_delay(
                exc, launch.retries, base=cfg.retry_base_s, cap=cfg.retry_max_s, rng=self._rng
            )
            log.info("create failed (%s); retry %d in %.2fs", exc.reason, launch.retries, delay)
            self._spawn(self._retries, self._retry(launch, delay))
            return
        reason = exc.reason
        if exc.retriable:
            reason = f"gave up after {launch.retries} retries: {reason}"
        metrics.CREATES.labels("failed" if exc.retriable else "rejected").inc()
        log.warning("launch failed: %s", reason)
        self._decided(launch, alive=False)
        self._report(launch.tp, launch.offset, self._failed(launch.key, launch.name, reason))

    async def _retry(self, launch: Launch, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._slots.acquire()
        await self._attempt(launch)

    def _cancelled(self, launch: Launch) -> None:
        """The launch ends here: whatever the create did, the pod is ended, never reported."""
        assert launch.cancel is not None
        self._decided(launch, alive=False)
        cancelling = self._cancel(launch.tp, launch.offset, launch.key, launch.cancel, owned=True)
        self._spawn(self._attempts, cancelling)

    def _decided(self, launch: Launch, alive: bool) -> None:
        self.launches.pop(launch.key, None)
        self.launching -= 1
        if alive:
            self.in_flight.add(launch.key)
        self._room.set()

    # -- events and offsets ------------------------------------------------------------------

    def _launched(self, launch: Launch) -> TaskEvent:
        return make_event(
            launch.key, SOURCE, State.LAUNCHED, discriminator=launch.name,
            executor="kubernetes", pod_name=launch.name, namespace=self.api.namespace,
        )  # fmt: skip

    def _failed(self, key: TaskKey, name: str, reason: str) -> TaskEvent:
        return make_event(
            key, SOURCE, State.FAILED, discriminator=name, reason=reason[:4096],
            executor="kubernetes", pod_name=name, namespace=self.api.namespace,
        )  # fmt: skip

    def _report(self, tp: TopicPartition | None, offset: int, event: TaskEvent) -> None:
        key = TaskKey.from_wire(event["key"]).partition_key
        self._publish(tp, offset, self.settings.topic.events, key, encode(event))

    def _publish(
        self, tp: TopicPartition | None, offset: int, topic: str, key: bytes | None, value: bytes
    ) -> None:
        self._spawn(self._publishes, self._send(tp, offset, topic, key, value))

    async def _send(
        self, tp: TopicPartition | None, offset: int, topic: str, key: bytes | None, value: bytes
    ) -> None:
        """Send until acknowledged, then let the request's offset (if any) be committed."""
        while True:
            try:
                await (await self.producer.send(topic, value, key=key))
                break
            except KafkaError as exc:
                log.warning("publishing to %s failed (%s); retrying", topic, exc)
                await asyncio.sleep(1.0)
        if tp is not None:
            self._finish(tp, offset)

    def _finish(self, tp: TopicPartition, offset: int) -> None:
        if tracker := self.trackers.get(tp):
            tracker.finish(offset)

    def _skip(self, tp: TopicPartition, offset: int) -> None:
        """A request with nothing to publish is done at once."""
        if tracker := self.trackers.get(tp):
            tracker.finish(offset)

    def _begin(self, tp: TopicPartition, offset: int) -> None:
        tracker = self.trackers.setdefault(tp, OffsetTracker())
        try:
            tracker.begin(offset)
        except ValueError:  # the partition was re-positioned without a revoke: start over
            self.trackers[tp] = tracker = OffsetTracker()
            tracker.begin(offset)

    async def _commit(
        self, requests: AIOKafkaConsumer, only: set[TopicPartition] | None = None
    ) -> None:
        offsets: dict[TopicPartition, int] = {}
        for tp, tracker in list(self.trackers.items()):
            offset = tracker.committable
            wanted = only is None or tp in only
            if wanted and offset is not None and offset != self.committed.get(tp):
                offsets[tp] = offset
        if not offsets:
            return
        try:
            await requests.commit(offsets)
        except KafkaError as exc:
            log.warning("commit refused; those requests will be re-delivered: %s", exc)
            return
        self.committed.update(offsets)

    async def _commit_every_interval(self, requests: AIOKafkaConsumer) -> None:
        while True:
            await asyncio.sleep(self.settings.launcher.commit_interval_s)
            await self._commit(requests)

    async def _drain(self) -> None:
        """On stop: abandon pending retries (re-delivered later), finish every publish."""
        for task in list(self._retries):
            task.cancel()
        while self._publishes:
            await asyncio.gather(*list(self._publishes), return_exceptions=True)

    def _spawn(self, tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_log_crash)

    def _observe(self, *, paused: bool) -> None:
        metrics.IN_FLIGHT.set(len(self.in_flight))
        metrics.LAUNCHING.set(self.launching)
        metrics.PAUSED.set(1 if paused else 0)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit what is finished before partitions move; forget their offsets after. The first
    assignment (even of none, with more replicas than partitions) makes the stage ready."""

    def __init__(self, stage: LauncherStage, consumer: AIOKafkaConsumer) -> None:
        self.stage = stage
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.stage._commit(self.consumer, set(revoked))
        for tp in revoked:
            self.stage.trackers.pop(tp, None)
            self.stage.committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.stage.ready = True


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("launch task crashed", exc_info=exc)


def main(settings: Settings) -> int:
    """`pipeline run launcher`: exit 2 when templates, the hook or kube config are unusable."""
    try:
        stage = LauncherStage(settings)
    except (ValueError, ConfigException, OSError) as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return 2
    return runtime.main(stage)
