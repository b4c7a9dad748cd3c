"""The Celery dispatcher stage: `tasks.celery` records become Celery tasks on their queue.

For each request: claim its dispatch record, `send_task` to the request's queue with a task
id derived from the task key (retrying publish failures with backoff, as Airflow's
`send_task_to_executor`), then publish `launched` or `failed`; offsets are committed only after
those events are acknowledged. A re-delivered record finds its dispatch record and re-announces
the same event (same event id) instead of sending again. Celery's client is blocking, so sends
run on a small thread pool, off the event loop. Cancels arrive in the same stream (the router
forwards them), in order with the requests; see `cancel`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import prometheus_client as prom
from aiokafka import AIOKafkaProducer
from celery import Celery

from pipeline import logs
from pipeline.celery_bridge.app import make_app, make_ledger, task_id_for
from pipeline.celery_bridge.ledger import DispatchRecord, Ledger
from pipeline.celery_bridge.publish import RETRIABLE, retrying, send
from pipeline.config import CelerySettings, Settings
from pipeline.kafka import (
    Batch,
    all_started,
    consume_batches,
    make_consumer,
    make_producer,
    send_all,
)
from pipeline.messages import (
    InvalidMessage,
    State,
    TaskControl,
    TaskEvent,
    TaskKey,
    TaskRequest,
    cancel_info,
    cancelled_reason,
    decode_control,
    decode_request,
    encode,
    looks_like_control,
    make_cancelled,
    make_dead_letter,
    make_event,
)
from pipeline.runtime import Stage
from pipeline.runtime import main as run_main

log = logging.getLogger(__name__)

SOURCE: Final = "celery-dispatcher"

DISPATCHED = prom.Counter(
    "pipeline_celery_dispatcher_requests_total", "Requests handled, by outcome.", ["outcome"]
)
DEAD_LETTERS = prom.Counter(
    "pipeline_celery_dispatcher_dead_letters_total", "Invalid records sent to the DLQ."
)


def event_key(event: TaskEvent) -> bytes:
    return TaskKey.from_wire(event["key"]).partition_key


def payload_of(request: TaskRequest) -> dict[str, Any]:
    """What the worker task receives: only what it needs to run the command."""
    return {"key": request["key"], "command": request["command"], "env": request.get("env", {})}


def announce(key: TaskKey, task_id: str, record: DispatchRecord) -> TaskEvent:
    """The event a dispatch record stands for: `launched`, `cancelled`, or `failed`."""
    if record["status"] == "cancelled" and "cancel" in record:
        return make_cancelled(key, SOURCE, record["cancel"], executor="celery",
                              celery_task_id=task_id)  # fmt: skip
    if record["status"] == "failed":
        return make_event(
            key, SOURCE, State.FAILED, reason=record["reason"], executor="celery",
            celery_task_id=task_id,
        )  # fmt: skip
    return make_event(key, SOURCE, State.LAUNCHED, executor="celery", celery_task_id=task_id)


def dispatch(
    app: Celery, ledger: Ledger, request: TaskRequest, celery: CelerySettings
) -> TaskEvent:
    """Send one request (at most once per task key) and return the event that reports it."""
    key = TaskKey.from_wire(request["key"])
    task_id = task_id_for(key)
    record: DispatchRecord = {
        "status": "sending", "queue": request["queue"], "payload": payload_of(request),
        "reason": None, "resends": 0, "resent_at": None,
    }  # fmt: skip
    try:
        existing = retrying(lambda: ledger.claim(task_id, record), celery)
        if existing is not None and existing["status"] != "sending":
            DISPATCHED.labels("duplicate").inc()
            return announce(key, task_id, existing)
        retrying(lambda: send(app, task_id, record), celery)
    except Exception as exc:
        record = {**record, "status": "failed", "reason": f"send_task failed: {exc}"}
        log.error("dispatch failed", extra={"reason": record["reason"]})
    else:
        record = {**record, "status": "sent"}
    try:
        retrying(lambda: ledger.update(task_id, record), celery)
    except RETRIABLE as exc:  # left at "sending": a re-delivery re-sends, the worker dedupes
        log.warning("dispatch record not updated: %s", exc)
    DISPATCHED.labels("launched" if record["status"] == "sent" else "failed").inc()
    return announce(key, task_id, record)


def cancel(
    app: Celery, ledger: Ledger, control: TaskControl, celery: CelerySettings
) -> TaskEvent | None:
    """End a Celery task for a cancel; the `cancelled` event when this path held the task.

    Not dispatched yet: a `cancelled` record is claimed, so the request (if it ever comes
    here) is never sent, and nothing is reported now (the task may be Kubernetes'). Sent:
    the record turns `cancelled` first (a worker checks it before running), then the task
    is revoked with terminate, and the worker kills the command's whole process group.
    """
    key = TaskKey.from_wire(control["key"])
    task_id = task_id_for(key)
    info = cancel_info(control)
    record: DispatchRecord = {
        "status": "cancelled", "queue": "", "payload": {}, "reason": cancelled_reason(info),
        "resends": 0, "resent_at": None, "cancel": info,
    }  # fmt: skip
    existing = retrying(lambda: ledger.claim(task_id, record), celery)
    if existing is None:
        DISPATCHED.labels("cancelled_before_dispatch").inc()
        return None
    if existing["status"] in ("failed", "cancelled"):
        return None  # finished, or cancelled before: nothing changes
    if retrying(lambda: ledger.completed(task_id), celery) is not None:
        return None  # the command already ended on its own; its outcome stands
    retrying(lambda: ledger.update(task_id, {**existing, "status": "cancelled", "cancel": info}),
             celery)  # fmt: skip
    retrying(lambda: app.control.revoke(task_id, terminate=True, signal="SIGTERM"), celery)
    DISPATCHED.labels("cancelled").inc()
    log.info("revoked", extra={"requested_by": info["requested_by"]})
    return make_cancelled(key, SOURCE, info, executor="celery", celery_task_id=task_id)


class CeleryDispatcher(Stage):
    name = "celery-dispatcher"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.app = make_app(settings.celery, fail_fast=True)
        self.ledger = make_ledger(self.app, settings.celery)
        self.pool = ThreadPoolExecutor(settings.celery.dispatch_concurrency, "send-task")
        self.producer: AIOKafkaProducer  # made in run(): it needs the running loop

    async def run(self, stopping: asyncio.Event) -> None:
        kafka = self.settings.kafka
        self.producer = make_producer(kafka, self.name)
        celery = self.settings.celery
        consumer = make_consumer(
            kafka, self.settings.topic.celery, group_id=celery.dispatcher_group_id,
            client_id=self.name, session_timeout_ms=celery.session_timeout_ms,
        )  # fmt: skip
        try:
            async with all_started(kafka, self.producer, consumer):
                self.ready = True
                await consume_batches(
                    consumer, self.handle, stopping,
                    max_records=self.settings.celery.dispatch_batch_size,
                )  # fmt: skip
        finally:
            self.ready = False
            self.pool.shutdown(wait=True)

    async def handle(self, batch: Batch) -> None:
        """Dispatch a batch concurrently; return once every resulting event is acknowledged."""
        topics = self.settings.topic
        dead: list[tuple[str, bytes | None, bytes]] = []
        sends = []
        dispatched: set[TaskKey] = set()
        for tp, records in batch.items():
            for record in records:
                limit = self.settings.kafka.max_message_bytes
                if looks_like_control(record.value or b""):
                    try:
                        sends.append(self._cancel(decode_control(record.value, max_bytes=limit)))
                        continue
                    except InvalidMessage:
                        pass  # not a control after all: decoded as a request below
                try:
                    request = decode_request(record.value, max_bytes=limit)
                except InvalidMessage as exc:
                    letter = make_dead_letter(
                        record.value, record.key, exc, topic=tp.topic, partition=tp.partition,
                        offset=record.offset, timestamp=record.timestamp, stage=self.name,
                        max_bytes=limit,
                    )  # fmt: skip
                    dead.append((topics.dlq, record.key, encode(letter)))
                    DEAD_LETTERS.inc()
                    continue
                key = TaskKey.from_wire(request["key"])
                if key in dispatched:  # the same try twice in one batch: one dispatch will do
                    DISPATCHED.labels("duplicate").inc()
                    continue
                dispatched.add(key)
                sends.append(self._dispatch(request))
        events = [e for e in await asyncio.gather(*sends) if e is not None]
        out = [(topics.events, event_key(e), encode(e)) for e in events]
        await send_all(self.producer, [*dead, *out])

    async def _cancel(self, control: TaskControl) -> TaskEvent | None:
        loop = asyncio.get_running_loop()
        with logs.bound(task=str(TaskKey.from_wire(control["key"]))):
            context = contextvars.copy_context()
            return await loop.run_in_executor(
                self.pool, context.run, cancel, self.app, self.ledger, control,
                self.settings.celery,
            )  # fmt: skip

    async def _dispatch(self, request: TaskRequest) -> TaskEvent | None:
        loop = asyncio.get_running_loop()
        with logs.bound(task=str(TaskKey.from_wire(request["key"]))):
            context = contextvars.copy_context()  # log fields follow the call into the pool
            return await loop.run_in_executor(
                self.pool, context.run, dispatch, self.app, self.ledger, request,
                self.settings.celery,
            )  # fmt: skip


def main(settings: Settings) -> int:
    return run_main(CeleryDispatcher(settings))
