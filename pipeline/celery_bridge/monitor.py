"""The Celery monitor stage: in-flight task states from the result backend, as TaskEvents.

Like Airflow's BulkStateFetcher, it reads the states of many tasks in one round trip (a Redis
MGET, or one SQL SELECT; see `ledger`) instead of one query per task, and publishes `running`,
`success` and `failed` events with deterministic ids. Tasks sent but not started within
`stalled_task_timeout_s` are re-sent once from their dispatch record, or failed (and revoked),
per `stalled_action`. On a broker with no visibility timeout (the filesystem transport), a
task still running after `visibility_timeout_s` lost its worker (the command would have timed
out long before), so it is treated the same way: the monitor does what Redis would do.
What it watches comes from the dispatcher's `launched` events; see `inflight` for how a
restart rebuilds that set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

import prometheus_client as prom
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from pipeline import logs, tasklogs
from pipeline.celery_bridge.app import is_redis, make_app, make_ledger
from pipeline.celery_bridge.inflight import InFlight, InFlightSet, mentions_celery_task
from pipeline.celery_bridge.ledger import DispatchRecord, Ledger
from pipeline.celery_bridge.publish import RETRIABLE, retrying, send
from pipeline.celery_bridge.states import Observation, observe
from pipeline.config import Settings
from pipeline.kafka import Batch, all_started, make_consumer, make_producer, send_all
from pipeline.messages import (
    TERMINAL_STATES,
    InvalidMessage,
    State,
    TaskEvent,
    TaskKey,
    decode_event,
    encode,
    make_cancelled,
    make_event,
)
from pipeline.runtime import Stage
from pipeline.runtime import main as run_main

log = logging.getLogger(__name__)

SOURCE: Final = "celery-monitor"
DISPATCHER_SOURCE: Final = "celery-dispatcher"

EVENTS = prom.Counter("pipeline_celery_monitor_events_total", "Events published.", ["state"])
STALLED = prom.Counter("pipeline_celery_monitor_stalled_total", "Stalled tasks.", ["action"])
WORKER_LOST = prom.Counter(
    "pipeline_celery_monitor_worker_lost_total",
    "Tries whose worker died while the command ran: failed, or rerun where configured.",
    ["action"],
)
IN_FLIGHT = prom.Gauge("pipeline_celery_monitor_in_flight", "Celery tasks being watched.")
FETCH_SECONDS = prom.Histogram(
    "pipeline_celery_monitor_fetch_seconds", "One bulk state fetch from the result backend."
)


def event_key(event: TaskEvent) -> bytes:
    return TaskKey.from_wire(event["key"]).partition_key


def fetch_states(ledger: Ledger, task_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """Backend entries for many tasks in one round trip (None where no entry exists yet)."""
    with FETCH_SECONDS.time():
        return ledger.states(task_ids)


def transition_events(entry: InFlight, seen: Observation) -> list[TaskEvent]:
    """Events that report `seen` for `entry`, `running` included when it was not yet reported
    and the command did start."""
    events = []
    started_command = seen.state == State.RUNNING or seen.exit_code is not None
    if started_command and not entry.running_reported:
        events.append(_event(entry, State.RUNNING))
    if seen.state is State.CANCELLED and seen.cancel is not None:
        events.append(
            make_cancelled(
                entry.key, SOURCE, seen.cancel, executor="celery", celery_task_id=entry.task_id
            )
        )
    elif seen.state in (State.SUCCESS, State.FAILED, State.CANCELLED):
        events.append(_event(entry, seen.state, seen.reason, seen.exit_code))
    return events


def _event(
    entry: InFlight, state: State, reason: str | None = None, exit_code: int | None = None
) -> TaskEvent:
    return make_event(
        entry.key, SOURCE, state, reason=reason, executor="celery",
        celery_task_id=entry.task_id, exit_code=exit_code,
    )  # fmt: skip


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forget the tries of partitions that moved away; the first assignment (even of none)
    makes the stage ready."""

    def __init__(self, stage: CeleryMonitor) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.stage.inflight.drop_partitions(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.stage.ready = True


class CeleryMonitor(Stage):
    name = "celery-monitor"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.celery = settings.celery
        self.app = make_app(settings.celery, fail_fast=True)
        self.ledger = make_ledger(self.app, settings.celery)
        self.inflight = InFlightSet(DISPATCHER_SOURCE, SOURCE)
        self.producer: AIOKafkaProducer  # made in run(): it needs the running loop
        self.committed: dict[TopicPartition, int] = {}
        broker = settings.celery.broker_url.get_secret_value()
        self.lost_after = None if is_redis(broker) else settings.celery.visibility_timeout_s

    async def run(self, stopping: asyncio.Event) -> None:
        kafka = self.settings.kafka
        self.producer = make_producer(kafka, self.name)
        # A follower: what it learns from events waits for the next bulk poll anyway
        # (`monitor_poll_interval_s`), so a longer fetch wait costs a task little latency
        # and spares a reader of the busiest topic most of its fetches.
        consumer = make_consumer(
            kafka, group_id=self.celery.monitor_group_id, client_id=self.name,
            session_timeout_ms=self.celery.session_timeout_ms, follower=True,
        )  # fmt: skip
        async with all_started(kafka, self.producer, consumer):
            consumer.subscribe([self.settings.topic.events], listener=_Rebalance(self))
            next_poll = 0.0
            while not stopping.is_set():
                self.learn(await consumer.getmany(timeout_ms=100, max_records=1000))
                if time.monotonic() >= next_poll:
                    await self.poll()
                    next_poll = time.monotonic() + self.celery.monitor_poll_interval_s
                await self.commit(consumer)
            await self.commit(consumer)

    def learn(self, batch: Batch) -> None:
        """Fold events in; invalid ones are skipped here (the reducer dead-letters them), and
        so is one that trips a bug, logged: no record can stop the monitor or, re-read after
        a restart, stop it again."""
        for tp, records in batch.items():
            for record in records:
                if not mentions_celery_task(record.value):  # nothing to learn: skip the parse
                    self.inflight.passed(tp, record.offset)
                    continue
                try:
                    self.inflight.learn(tp, record.offset, decode_event(record.value))
                except InvalidMessage:
                    self.inflight.passed(tp, record.offset)
                except Exception:
                    log.exception("event skipped", extra={"at": f"{tp}/{record.offset}"})
                    self.inflight.passed(tp, record.offset)
        IN_FLIGHT.set(len(self.inflight))

    async def poll(self) -> None:
        """Fetch every in-flight task's state in bulk and publish what changed."""
        entries = list(self.inflight.tasks.values())
        step = self.celery.monitor_fetch_batch
        for start in range(0, len(entries), step):
            await self.poll_chunk(entries[start : start + step])
        IN_FLIGHT.set(len(self.inflight))

    async def poll_chunk(self, entries: list[InFlight]) -> None:
        try:
            metas = await asyncio.to_thread(fetch_states, self.ledger, [e.task_id for e in entries])
        except RETRIABLE as exc:
            log.warning("result backend unreachable; will retry: %s", exc)
            return
        events: list[TaskEvent] = []
        now = time.time()
        for entry in entries:
            seen = observe(metas[entry.task_id])
            if entry.cancelled_at is not None:
                await self.after_cancel(entry, seen, now)
            elif overdue := self.overdue(entry, seen, now):
                events += await self.stalled(entry, *overdue)
            elif seen.state is not None:
                found = transition_events(entry, seen)
                if seen.lost and any(e["state"] == seen.state for e in found):
                    WORKER_LOST.labels("rerun" if seen.exit_code is not None else "failed").inc()
                events += found
        await self.publish(events)

    async def after_cancel(self, entry: InFlight, seen: Observation, now: float) -> None:
        """A task the dispatcher cancelled: once its worker recorded how the command ended,
        keep what it printed, then stop watching (also when no worker ever takes it)."""
        ended = seen.state in TERMINAL_STATES
        assert entry.cancelled_at is not None
        if ended or now - entry.cancelled_at > self.celery.stalled_task_timeout_s:
            if ended:
                await self.keep_logs([_event(entry, State.CANCELLED)])
            self.inflight.tasks.pop(entry.task_id, None)

    def overdue(self, entry: InFlight, seen: Observation, now: float) -> tuple[str, float] | None:
        """Why a task looks lost, and how long it may wait after a re-send: not started in
        time, or (no broker redelivery) running for longer than any command may."""
        if seen.state is None:
            patience = self.celery.stalled_task_timeout_s
            if now - entry.sent_at > patience:
                return f"stalled: not started within {patience:g}s", patience
        elif seen.state == State.RUNNING and self.lost_after is not None:
            entry.running_since = entry.running_since or now
            if now - max(entry.running_since, entry.sent_at) > self.lost_after:
                return f"lost: still running after {self.lost_after:g}s", self.lost_after
        return None

    async def publish(self, events: list[TaskEvent]) -> None:
        """Publish (with the output of each finished command) and wait for the acks; only then
        does the in-flight set move on."""
        topic = self.settings.topic.events
        await send_all(self.producer, [(topic, event_key(e), encode(e)) for e in events])
        await self.keep_logs([e for e in events if State(e["state"]) in TERMINAL_STATES])
        for event in events:
            EVENTS.labels(event["state"]).inc()
            self.inflight.apply(event)

    async def keep_logs(self, finished: list[TaskEvent]) -> None:
        """Each finished command's captured output (from its completion record) to the logs
        topic, where it outlives the worker and the result's expiry: one read and one
        produce round trip for the whole batch."""
        ids = {e["celery_task_id"]: e for e in finished if e.get("celery_task_id")}
        if not ids:
            return
        try:
            done = await asyncio.to_thread(self.ledger.completions, list(ids))
        except RETRIABLE as exc:
            log.warning("output of %d tasks not kept, backend unreachable: %s", len(ids), exc)
            return
        records = []
        for task_id, event in ids.items():
            if (completion := done[task_id]) is None or "log" not in completion:
                continue
            record = tasklogs.make_task_log(
                TaskKey.from_wire(event["key"]), "celery", task_id,
                str(completion["log"]).encode(), max_bytes=self.settings.logs.max_bytes,
            )  # fmt: skip
            record["truncated"] += int(completion.get("log_truncated") or 0)
            records.append(record)
        await tasklogs.publish(self.producer, self.settings.topic.logs, records)

    async def stalled(self, entry: InFlight, reason: str, patience: float) -> list[TaskEvent]:
        """Re-send a stalled task once (same id, from its dispatch record), else fail it with
        a reason that names its queue (a queue no worker consumes is the usual cause)."""
        with logs.bound(task=str(entry.key), celery_task_id=entry.task_id):
            try:
                record = await asyncio.to_thread(
                    retrying, lambda: self.ledger.dispatch(entry.task_id), self.celery
                )
                resent_at = await asyncio.to_thread(
                    self._resend_once, entry.task_id, record, patience
                )
            except RETRIABLE as exc:
                log.warning("stalled task not re-sent yet, backend unreachable: %s", exc)
                return []
            if resent_at is not None:
                entry.sent_at = resent_at
                STALLED.labels("resent").inc()
                log.warning("%s; re-sent it", reason)
                return []
            if record is not None and record["queue"]:
                reason = f"{reason} on Celery queue {record['queue']!r} (does a worker consume it?)"
            STALLED.labels("failed").inc()
            log.warning("%s; failing it", reason)
            await asyncio.to_thread(self._revoke, entry.task_id)
            return [_event(entry, State.FAILED, reason)]

    def _resend_once(
        self, task_id: str, record: DispatchRecord | None, patience: float
    ) -> float | None:
        """The new send time if the task was (or had been, less than `patience` ago) re-sent
        and may wait again."""
        if record is None or self.celery.stalled_action == "fail":
            return None
        resent_at = record.get("resent_at")
        if record["resends"] >= 1:  # re-sent before (perhaps by a previous monitor)
            waited = time.time() - (resent_at or 0.0)
            return resent_at if waited <= patience else None
        retrying(lambda: send(self.app, task_id, record), self.celery)
        now = time.time()
        self.ledger.update(task_id, {**record, "resends": record["resends"] + 1, "resent_at": now})
        return now

    def _revoke(self, task_id: str) -> None:
        """Best effort: a worker that picks the task up later discards it."""
        try:
            self.app.control.revoke(task_id)
        except RETRIABLE as exc:
            log.warning("revoke not delivered: %s", exc)

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the in-flight low-water mark of owned partitions, when it moved."""
        assigned = consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self.inflight.commit_offsets().items()
            if tp in assigned and self.committed.get(tp) != offset
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self.committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit refused after a rebalance: %s", exc)


def main(settings: Settings) -> int:
    return run_main(CeleryMonitor(settings))
