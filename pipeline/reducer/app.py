"""The reducer as a faust app: it folds the events topic into a Table of TaskStates.

Records reach the fold a fetch at a time, not through a faust agent (see `transport`).
The table's changelog is the compacted state topic, so a restarted or rebalanced worker
recovers its partitions from it (to the fetch high-water, see `recovery`). The fold also
reads the executor topics (the router's routed requests) to keep each task's request in its
state for the stuck-queued sweeper, and the logs topic to index where each finished try's
output lies (partition and offset in the state; the text stays on the topic). These topics
are partitioned by the partition key and have the same partition count, so a task's events,
requests, log and state share one partition, and each changelog record goes to the
partition of the event that caused it.

Table keys are the *full* task key, try included: a higher try is its own record (its own
history, its own terminal state), while the partition key keeps every try on one partition.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import prometheus_client
from aiokafka.structs import ConsumerRecord, RecordMetadata
from faust.tables.recovery import Recovery

from pipeline import eventloop, logs
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
from pipeline.reducer import retention
from pipeline.reducer.fold import (
    LogRef,
    Outcome,
    TaskState,
    attach_log,
    attach_request,
    fit_encoded,
    fold_event,
    state_key,
)
from pipeline.reducer.listing import Arrivals
from pipeline.reducer.recovery import table_manager_for
from pipeline.reducer.store import EncodedStore
from pipeline.reducer.timeline import Timeline
from pipeline.reducer.transport import BatchFold, Records, transport_for
from pipeline.tasklogs import decode_task_log

log = logging.getLogger(__name__)

TABLE = "task_state"
BATCH_MAX = 1000
"""Records per fetch, so one batch's fold holds the event loop (API, timers) for tens of ms."""

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


@dataclass
class Batch:
    """What folding one fetch produced: the touched states and what is dead-lettered."""

    now: float
    horizon: float | None
    """Records from before it about tries the table does not hold are not folded."""
    touched: dict[bytes, tuple[int, TaskState, bytes]] = field(default_factory=dict)
    """Per key: the changelog partition, the newest state and that state as written."""
    letters: list[tuple[ConsumerRecord[bytes, bytes], InvalidMessage]] = field(default_factory=list)
    outcomes: Counter[Outcome] = field(default_factory=Counter)


class Reducer:
    """The faust app, its table and topics, built from the project's settings.

    The source topics have no agent: faust subscribes to them and assigns their partitions
    with the table's, and its consumer hands their records to `fold_batch` a fetch at a time
    (see `transport`), so no record pays for faust's per-message stream machinery.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = settings.topic
        self.bulk_topics = frozenset(
            (self.topics.events, self.topics.kubernetes, self.topics.celery, self.topics.logs)
        )
        self.app = faust_app(settings, bulk=self)
        partitions = settings.topic.partitions
        self.table = self.app.Table(
            TABLE,
            default=None,
            partitions=partitions,
            # raw: the store keeps and checks the changelog's bytes itself (pipeline.reducer.store)
            schema=faust.Schema(key_serializer="raw", value_serializer="raw"),
            changelog_topic=self.app.topic(
                settings.topic.state,
                partitions=partitions,
                compacting=True,
                deleting=False,
                key_serializer="raw",
                value_serializer="raw",
            ),
        )
        self.source = self.app.topic(
            *sorted(self.bulk_topics), key_serializer="raw", value_serializer="raw"
        )
        self.app.topics.add(self.source)
        self.max_bytes = settings.kafka.max_message_bytes
        self.history_limit = settings.reducer.history_limit
        self.retention_s = settings.reducer.retention_s
        self.outcomes: Counter[str] = Counter()
        self.throughput = Throughput()
        self.timeline = Timeline()
        self.arrivals = Arrivals(self.state_of)
        self.store.observer = self.arrivals

        self.crashed: BaseException | None = None

    async def fold_batch(self, records: Records) -> Awaitable[None]:
        """Fold a fetch's records, then write each touched state once (one changelog record).

        Returns once the writes (and dead letters) are sent, with an awaitable that completes
        when the broker has acknowledged them all: the consumer acks the batch's offsets
        only then, so no offset is committed ahead of the state it produced, while the next
        fetch is folded over the states already in the table.
        """
        try:
            now = time.time()
            batch = Batch(now, retention.horizon(now, self.retention_s))
            for partition_records in records.values():
                for record in partition_records:
                    self.fold_one(record, batch)
            sends = [await self.dead_letter(record, error) for record, error in batch.letters]
            for key, (partition, state, value) in batch.touched.items():
                sends.append(await self.write(partition, key, state, value))
        except Exception as exc:  # liveness must tell: a stopped fold folds nothing
            self.crashed = exc
            raise
        self.count(batch.outcomes)
        return self.acknowledged(sends)

    async def acknowledged(self, sends: list[Awaitable[RecordMetadata]]) -> None:
        """Wait for every send's acknowledgement (the first failure raises).

        One by one rather than `gather`: a produce request acknowledges many sends at once,
        so most are done when their turn comes, and gather cost a callback per send.
        """
        try:
            for sent in sends:
                await sent
        except Exception as exc:
            self.crashed = exc
            raise

    async def write(
        self, partition: int, key: bytes, state: TaskState, value: bytes
    ) -> Awaitable[RecordMetadata]:
        """`table[key] = state`, to the changelog partition of the record that caused it.

        Faust's own `__setitem__` takes the partition from the stream's current event, and
        queues each write in a per-key buffer; this is the same two steps, the write sent
        as the already encoded `value` straight to the producer.
        """
        self.store.put_encoded(key, state, value, partition)
        return await self.app.producer.send(self.changelog, key, value, partition, None, None)

    async def forget(self, keys: list[bytes], horizon_s: float) -> int:
        """Forget the finished tries among `keys` still older than the horizon: out of the
        table and the listing, and a tombstone to the changelog partition each was written
        to. Returns how many; the tombstones are acknowledged when it returns (a failed one
        raises, and only this pass stops: the fold is not at fault).

        Each state is judged and dropped with no wait in between, so a fold cannot slip a
        newer state in; a tombstone lost to a crash brings the try back at recovery, to be
        forgotten again by the next pass.
        """
        sends, dropped = [], 0
        for key in keys:
            state = self.state_of(key)
            if state is None or not retention.forgettable(state, horizon_s):
                continue
            partition = self.store.partition_of(key)
            self.store.forget(key)
            dropped += 1
            if partition is not None:
                send = self.app.producer.send(self.changelog, key, None, partition, None, None)
                sends.append(await send)
        for sent in sends:
            await sent
        return dropped

    @property
    def changelog(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def fold_one(self, record: ConsumerRecord[bytes, bytes], batch: Batch) -> None:
        """Fold one record over the batch's view of its state.

        A bad event is dead-lettered, and so is one that trips a bug (a poison record is
        skipped, never re-read into a crash loop); a bad request is skipped, since the stage
        that consumes its topic dead-letters it.
        """
        raw = record.value
        limit = self.history_limit
        try:
            if record.topic == self.topics.events:
                task_event = decode_event(raw, max_bytes=self.max_bytes)
                key, when = state_key(task_event["key"]), task_event["observed_at"]
                before = self.current(key, batch)
                state, outcome = fold_event(before, task_event, limit)
            elif record.topic == self.topics.logs:
                log_record = decode_task_log(raw, max_bytes=self.max_bytes)
                key, when = state_key(log_record["key"]), log_record["captured_at"]
                ref: LogRef = {
                    "partition": record.partition,
                    "offset": record.offset,
                    "bytes": len(log_record["text"]),
                }
                before = self.current(key, batch)
                state, outcome = attach_log(
                    before, log_record["key"], ref, log_record["captured_at"]
                )
            else:
                try:
                    request = decode_request(raw, max_bytes=self.max_bytes)
                except InvalidMessage:
                    EVENTS.labels("invalid_request").inc()
                    return
                key = state_key(request["key"])
                when = (request.get("routing") or {}).get("routed_at", request["submitted_at"])
                before = self.current(key, batch)
                state, outcome = attach_request(
                    before, request, limit, size=len(raw or b""), keep_bytes=self.max_bytes // 4
                )
        except InvalidMessage as exc:
            batch.letters.append((record, exc))
            return
        except Exception as exc:
            log.exception("record dead-lettered after an internal error")
            batch.letters.append((record, InvalidMessage(ErrorCode.INTERNAL, repr(exc))))
            return
        if before is None and retention.before_horizon(when, batch.horizon):
            outcome = Outcome.EXPIRED
        batch.outcomes[outcome] += 1
        if outcome is Outcome.ILLEGAL:
            self.refused(state)
        elif outcome is Outcome.APPLIED:
            self.timeline.record(before, state, batch.now)
        else:  # duplicate, stale, expired: nothing to write
            return
        if (kept := fit_encoded(state, self.max_bytes)) is None:
            error = InvalidMessage(ErrorCode.OVERSIZED, "its task state would not fit")
            batch.letters.append((record, error))
            return
        batch.touched[key] = (record.partition, *kept)

    @property
    def store(self) -> EncodedStore:
        store = self.table.data
        assert isinstance(store, EncodedStore)  # faust_app configures `encoded://`
        return store

    def current(self, key: bytes, batch: Batch) -> TaskState | None:
        folded = batch.touched.get(key)
        if folded is not None:
            return folded[1]
        states = self.store.data
        if key not in states:  # a miss through the store's own `get` raises and catches
            return None
        return states[key]

    def count(self, outcomes: Counter[Outcome]) -> None:
        """Count a batch's outcomes (the metrics, /stats and its throughput)."""
        for outcome, n in outcomes.items():
            EVENTS.labels(outcome.value).inc(n)
            self.outcomes[outcome.value] += n
        self.throughput.add(outcomes.total())

    def refused(self, state: TaskState) -> None:
        ILLEGAL.inc()
        with logs.bound(task=str(TaskKey.from_wire(state["key"]))):
            log.warning(
                "illegal transition refused",
                extra={"state": state["state"], "refused": state["illegal_event_ids"][-1]},
            )

    async def dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: InvalidMessage
    ) -> Awaitable[RecordMetadata]:
        """Send `record` to the dead-letter topic; its batch is acked once this is, too."""
        letter = make_dead_letter(
            record.value,
            record.key,
            error,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            stage="reducer",
            max_bytes=self.max_bytes,
        )
        DEAD_LETTERS.inc()
        log.warning("dead-lettered record", extra={"topic": record.topic, "error": error.message})
        return await self.app.producer.send(
            self.topics.dlq, record.key, encode(letter), None, None, None
        )

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

    def state_of(self, key: bytes) -> TaskState | None:
        """The state this replica holds under `key`, if any (decoded afresh)."""
        return self.store.data.get(key)

    def states_in(self, state: str) -> list[TaskState]:
        """This replica's states that are in `state`, found by their counts' cells."""
        found = (self.state_of(key) for key in self.newest().keys_in(state))
        return [s for s in found if s is not None]

    def newest(self) -> Arrivals:
        """The states by arrival (rebuilt first in the one case the store cannot keep it
        current: see `Arrivals`)."""
        self.arrivals.sync(self.table.items(), len(self.table))
        return self.arrivals


def faust_app(settings: Settings, bulk: BatchFold | None = None) -> faust.App:
    """A faust App configured from the project's settings (never from faust's own CLI/env);
    its consumer delivers the records of `bulk.bulk_topics` to `bulk` (see `transport`)."""
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
        store="encoded://",  # pipeline.reducer.store: states kept as their JSON
        datadir=str(data_dir),
        autodiscover=False,
        topic_partitions=settings.topic.partitions,
        topic_replication_factor=settings.topic.replication_factor,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=BATCH_MAX,
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
    app.transport = transport_for(kafka, bulk, app.conf.broker_consumer, app)
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
    loop = eventloop.new_event_loop()
    asyncio.set_event_loop(loop)
    reducer = Reducer(settings)
    api.register(reducer)
    cancel_api.register(reducer)
    logs_api.register(reducer)
    sweeper.register(reducer)
    retention.register(reducer)
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
