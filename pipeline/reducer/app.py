"""The reducer as a faust app: one agent folds the events topic into a Table of TaskStates.

The table's changelog is the compacted state topic, so a restarted or rebalanced worker
recovers its partitions from it (to the fetch high-water, see `recovery`). The agent also
reads the executor topics (the router's routed requests) to keep each task's request in its
state for the stuck-queued sweeper, and the logs topic to index where each finished try's
output lies (partition and offset in the state; the text stays on the topic). These topics
are partitioned by the partition key and have the same partition count, so a task's events,
requests, log and state share one partition, and faust writes each changelog record to the
partition of the event that caused it.

Table keys are the *full* task key, try included: a higher try is its own record (its own
history, its own terminal state), while the partition key keeps every try on one partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
import prometheus_client
from faust.tables.recovery import Recovery
from faust.types import EventT, FutureMessage, StreamT

from pipeline import logs
from pipeline.config import Settings
from pipeline.kafka import connection_options, group_timeouts
from pipeline.messages import (
    ErrorCode,
    InvalidMessage,
    TaskKey,
    decode_event,
    decode_request,
    encode,
    make_dead_letter,
)
from pipeline.reducer.fold import (
    LogRef,
    Outcome,
    TaskState,
    attach_log,
    attach_request,
    fit,
    fold_event,
    state_key,
)
from pipeline.reducer.listing import Arrivals
from pipeline.reducer.recovery import table_manager_for
from pipeline.reducer.timeline import Timeline
from pipeline.reducer.transport import transport_for
from pipeline.tasklogs import decode_task_log

log = logging.getLogger(__name__)

TABLE = "task_state"
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.05

EVENTS = prometheus_client.Counter(
    "pipeline_reducer_events_total", "Events folded, by outcome.", ["outcome"]
)
ILLEGAL = prometheus_client.Counter(
    "pipeline_reducer_illegal_transitions_total", "Transitions refused by the state machine."
)
DEAD_LETTERS = prometheus_client.Counter(
    "pipeline_reducer_dead_letters_total", "Invalid records sent to the dead-letter topic."
)


class Throughput:
    """Records folded per second over the last minute, for /stats."""

    def __init__(self, window_s: int = 60) -> None:
        self.window_s = window_s
        self.buckets: deque[list[int]] = deque()

    def add(self, count: int = 1) -> None:
        now = int(time.monotonic())
        if self.buckets and self.buckets[-1][0] == now:
            self.buckets[-1][1] += count
        else:
            self.buckets.append([now, count])
        while self.buckets and self.buckets[0][0] <= now - self.window_s:
            self.buckets.popleft()

    def per_second(self) -> float:
        self.add(0)
        return sum(count for _, count in self.buckets) / self.window_s


class Reducer:
    """The faust app, its table and topics, built from the project's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = settings.topic
        self.app = faust_app(settings)
        partitions = settings.topic.partitions
        self.table = self.app.Table(
            TABLE,
            default=None,
            partitions=partitions,
            schema=faust.Schema(key_serializer="raw", value_serializer="json"),
            changelog_topic=self.app.topic(
                settings.topic.state,
                partitions=partitions,
                compacting=True,
                deleting=False,
                key_serializer="raw",
                value_serializer="json",
            ),
        )
        self.source = self.app.topic(
            settings.topic.events,
            settings.topic.kubernetes,
            settings.topic.celery,
            settings.topic.logs,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.max_bytes = settings.kafka.max_message_bytes
        self.outcomes: Counter[str] = Counter()
        self.throughput = Throughput()
        self.timeline = Timeline()
        self.arrivals = Arrivals()

        self.crashed: BaseException | None = None

        async def fold_stream(stream: StreamT[bytes]) -> None:
            assert isinstance(stream, faust.Stream)
            try:
                async for batch in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN_S):
                    await self.fold_batch(batch)
                    for event in batch:
                        await stream.ack(event)
            except Exception as exc:  # liveness must tell: a stopped agent folds nothing
                self.crashed = exc
                raise

        self.app.agent(self.source, name="reducer")(fold_stream)

    async def fold_batch(self, events: Sequence[EventT[bytes]]) -> None:
        """Fold a batch of records, then write each touched state once (one changelog record).

        Returns once the broker has acknowledged every write, and the caller acks the batch
        only then: no offset is committed ahead of the state it produced (faust's own flush
        before a commit gives up on a slow buffer after 0.1 s, so it is not relied on).
        """
        touched: dict[bytes, TaskState] = {}
        partitions: dict[bytes, int] = {}
        for event in events:
            folded = await self.fold_one(event, touched)
            if folded is None:
                continue
            key, state = folded
            if (kept := fit(state, self.max_bytes)) is None:
                error = InvalidMessage(ErrorCode.OVERSIZED, "its task state would not fit")
                await self.dead_letter(event, error)
                continue
            touched[key] = kept
            partitions[key] = event.message.partition
        writes = [self.write(partitions[key], key, state) for key, state in touched.items()]
        await asyncio.gather(*writes)

    def write(self, partition: int, key: bytes, state: TaskState) -> FutureMessage:
        """`table[key] = state`, to the changelog partition of the record that caused it.

        Faust's own `__setitem__` takes the partition from the stream's current event,
        which a batch no longer has; this is the same two steps with the partition given.
        """
        sent = self.table.send_changelog(partition, key, state)
        self.table.data[key] = state
        self.arrivals.put(key, state)
        return sent

    async def fold_one(
        self, event: EventT[bytes], touched: dict[bytes, TaskState]
    ) -> tuple[bytes, TaskState] | None:
        """Fold one record over the batch's view of its state.

        A bad event is dead-lettered, and so is one that trips a bug (a poison record is
        skipped, never re-read into a crash loop); a bad request is skipped, since the stage
        that consumes its topic dead-letters it.
        """
        message = event.message
        raw = message.value if isinstance(message.value, bytes) else None
        limit = self.settings.reducer.history_limit
        try:
            if message.topic == self.topics.events:
                task_event = decode_event(raw, max_bytes=self.max_bytes)
                key = state_key(task_event["key"])
                before = self.current(key, touched)
                state, outcome = fold_event(before, task_event, limit)
            elif message.topic == self.topics.logs:
                record = decode_task_log(raw, max_bytes=self.max_bytes)
                key = state_key(record["key"])
                ref: LogRef = {
                    "partition": message.partition,
                    "offset": message.offset,
                    "bytes": len(record["text"]),
                }
                before = self.current(key, touched)
                state, outcome = attach_log(before, record["key"], ref, record["captured_at"])
            else:
                try:
                    request = decode_request(raw, max_bytes=self.max_bytes)
                except InvalidMessage:
                    EVENTS.labels("invalid_request").inc()
                    return None
                key = state_key(request["key"])
                before = self.current(key, touched)
                state, outcome = attach_request(
                    before, request, limit, size=len(raw or b""), keep_bytes=self.max_bytes // 4
                )
        except InvalidMessage as exc:
            await self.dead_letter(event, exc)
            return None
        except Exception as exc:
            log.exception("record dead-lettered after an internal error")
            await self.dead_letter(event, InvalidMessage(ErrorCode.INTERNAL, repr(exc)))
            return None
        self.count(outcome, state)
        if outcome is Outcome.APPLIED:
            with contextlib.suppress(ValueError):  # an odd timestamp only misses a chart point
                self.timeline.record(before, state, time.time())
        return (key, state) if outcome in (Outcome.APPLIED, Outcome.ILLEGAL) else None

    def current(self, key: bytes, touched: dict[bytes, TaskState]) -> TaskState | None:
        return touched[key] if key in touched else self.table.get(key)

    def count(self, outcome: Outcome, state: TaskState) -> None:
        EVENTS.labels(outcome.value).inc()
        self.outcomes[outcome.value] += 1
        self.throughput.add()
        if outcome is Outcome.ILLEGAL:
            ILLEGAL.inc()
            with logs.bound(task=str(TaskKey.from_wire(state["key"]))):
                log.warning(
                    "illegal transition refused",
                    extra={"state": state["state"], "refused": state["illegal_event_ids"][-1]},
                )

    async def dead_letter(self, event: EventT[bytes], error: InvalidMessage) -> None:
        message = event.message
        letter = make_dead_letter(
            message.value if isinstance(message.value, bytes) else None,
            message.key if isinstance(message.key, bytes) else None,
            error,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp=int(message.timestamp * 1000) if message.timestamp else None,
            stage="reducer",
            max_bytes=self.max_bytes,
        )
        # Acknowledged before the offset can be committed: never dropped.
        await self.publish(self.topics.dlq, message.key, encode(letter))
        DEAD_LETTERS.inc()
        log.warning("dead-lettered record", extra={"topic": message.topic, "error": error.message})

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Send one record and wait for the broker's acknowledgement."""
        channel = self.app.topic(topic, key_serializer="raw", value_serializer="raw")
        await (await channel.send(key=key, value=value))

    @property
    def ready(self) -> bool:
        """Serving: the first table recovery is done and no rebalance is under way."""
        app = self.app
        recovery: Recovery = app.tables.recovery  # type: ignore[attr-defined]
        return recovery.completed.is_set() and not (app.rebalancing or app.in_recovery)

    def health(self) -> tuple[bool, str]:
        if self.crashed is not None:
            return False, f"fold agent stopped: {self.crashed!r}"[:500]
        return True, "recovering" if self.app.in_recovery else "ok"

    def states(self) -> list[TaskState]:
        """Every state held by this replica (its assigned partitions)."""
        return [value for value in self.table.values() if value is not None]

    def newest(self) -> Arrivals:
        """The states by arrival, rebuilt first if recovery or a rebalance changed the table."""
        if self.app.rebalancing or self.app.in_recovery:
            self.arrivals.stale = True
        self.arrivals.sync(self.table.items(), len(self.table))
        return self.arrivals


def faust_app(settings: Settings) -> faust.App:
    """A faust App configured from the project's settings (never from faust's own CLI/env)."""
    reducer, kafka = settings.reducer, settings.kafka
    app_id = reducer.app_id or f"reducer-{settings.topic.state}"
    data_dir = reducer.data_dir or Path(tempfile.gettempdir()) / f"pipeline-{app_id}"
    group = group_timeouts(
        kafka, int(reducer.session_timeout_s * 1000) if reducer.session_timeout_s else None
    )
    app = faust.App(
        app_id,
        broker=";".join(f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")),
        broker_client_id=f"{kafka.client_id}-reducer",
        broker_credentials=_credentials(settings),
        producer_acks=-1,
        producer_linger=kafka.linger_ms / 1000,
        store="memory://",
        datadir=str(data_dir),
        autodiscover=False,
        topic_partitions=settings.topic.partitions,
        topic_replication_factor=settings.topic.replication_factor,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=group["session_timeout_ms"] / 1000,
        broker_heartbeat_interval=group["heartbeat_interval_ms"] / 1000,
        web_enabled=True,
        web_bind=settings.runtime.http_host,
        web_port=reducer.api_port,
        canonical_url=reducer.api_url or f"http://127.0.0.1:{reducer.api_port}",
        web_stats_enabled=False,
        web_graph_enabled=False,
        TableManager=table_manager_for(kafka),
    )
    app.transport = transport_for(kafka, app.conf.broker_consumer, app)
    return app


def _credentials(settings: Settings) -> Any:
    kafka = settings.kafka
    options = connection_options(kafka)
    context = options.get("ssl_context")
    if kafka.sasl_mechanism:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    return faust.SSLCredentials(context) if context is not None else None


class ReducerWorker(faust.Worker):
    """A faust worker held to the runtime's hard shutdown deadline, like every stage.

    Faust's own stop has no bound (it waits on the broker to commit and leave the group, and
    with the broker gone that can take minutes or hang), so the stop arms a last-resort exit.
    """

    def __init__(self, *args: Any, shutdown_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shutdown_timeout_s = shutdown_timeout_s

    async def on_stop(self) -> None:
        deadline = threading.Timer(self.shutdown_timeout_s, _exit_at_deadline)
        deadline.daemon = True  # a stop that finishes in time exits without waiting for it
        deadline.start()
        await super().on_stop()


def _exit_at_deadline() -> None:
    log.error("shutdown deadline passed; exiting")
    logging.shutdown()
    os._exit(1)


def main(settings: Settings) -> int:
    """`pipeline run reducer`: a faust worker in a fresh event loop, configured from settings.

    The worker is driven programmatically (no faust CLI, no sys.argv parsing); it owns the
    loop and the SIGTERM/SIGINT handling and serves the query API on `reducer.api_port`.
    """
    from pipeline.reducer import (  # web views and timers register on the app
        api,
        cancel_api,
        logs_api,
        sweeper,
    )

    runtime = settings.runtime
    logs.configure("reducer", runtime.log_level, runtime.log_format)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    reducer = Reducer(settings)
    api.register(reducer)
    cancel_api.register(reducer)
    logs_api.register(reducer)
    sweeper.register(reducer)
    worker = ReducerWorker(
        reducer.app,
        shutdown_timeout_s=runtime.shutdown_timeout_s,
        loop=loop,
        loglevel=runtime.log_level,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception:  # the worker re-raises what crashed it once the loop is closed
        log.exception("reducer crashed")
        return 1
    return 0
