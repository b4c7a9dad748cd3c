"""Routing decisions: which executor a request goes to, and every message a record becomes.

Pure functions only, so the router stage is a thin loop around them and every rule here
is tested without a broker: a record in, a list of (topic, key, value) messages out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from pipeline import messages
from pipeline.config import Settings
from pipeline.messages import ErrorCode, InvalidMessage, State, TaskKey, TaskRequest

Target = Literal["kubernetes", "celery"]
Message = tuple[str, bytes | None, bytes]

STAGE: Final = "router"
REASON_LIMIT: Final = 2000  # TaskEvent.reason allows 4096; keep events small


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Everything a routing decision depends on, read once from settings."""

    kubernetes_queue: str
    routes: Mapping[str, Target]
    default_target: Target | None
    topics: Mapping[Target, str]
    events_topic: str
    dlq_topic: str
    max_bytes: int
    control_topic: str = "tasks.control"

    @classmethod
    def from_settings(cls, settings: Settings) -> RouteTable:
        return cls(
            kubernetes_queue=settings.kubernetes_queue,
            routes=dict(settings.router.routes),
            default_target=settings.router.default_target,
            topics={"kubernetes": settings.topic.kubernetes, "celery": settings.topic.celery},
            events_topic=settings.topic.events,
            dlq_topic=settings.topic.dlq,
            max_bytes=settings.kafka.max_message_bytes,
            control_topic=settings.topic.control,
        )


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read: kept on the routing stamp and in dead letters."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None = None


@dataclass(slots=True)
class Outcome:
    """What one record became: the messages to publish, and where it went (for metrics)."""

    messages: list[Message] = field(default_factory=list)
    target: Target | None = None
    reason: ErrorCode | None = None


def route_control(
    raw: bytes | None, raw_key: bytes | None, source: Source, table: RouteTable
) -> Outcome:
    """A cancel goes to *both* executor topics, under the task's partition key.

    The router cannot know where the request went (or will go: the cancel may come first),
    so each executor stage gets it in order with whatever it holds of that task, and the
    one that owns the task ends it; the other only remembers it.
    """
    value = raw if raw is not None else b""
    try:
        control = messages.decode_control(value, max_bytes=table.max_bytes)
    except InvalidMessage as invalid:
        return rejected(value, raw_key, invalid, source, table, ends_task=False)
    key = TaskKey.from_wire(control["key"]).partition_key
    return Outcome(messages=[(topic, key, value) for topic in table.topics.values()])


def resolve(table: RouteTable, queue: str) -> Target | None:
    """The executor for a queue: the kubernetes queue, then the table, then the default.

    The kubernetes queue wins over a table entry, as Airflow's `kubernetes_queue` does.
    """
    if queue == table.kubernetes_queue:
        return "kubernetes"
    return table.routes.get(queue, table.default_target)


def stamped(raw: bytes, request: TaskRequest, routing: dict[str, Any]) -> bytes:
    """The request as the executor topic carries it: the producer's bytes plus the stamp.

    Appending to the original object keeps every byte the producer wrote; a request that
    already carries a stamp (a re-driven copy of a routed one) is re-encoded instead.
    """
    body = raw.rstrip()
    if "routing" in request or not body.endswith(b"}"):
        return messages.encode({**request, "routing": routing})
    return b'%s,"routing":%s}' % (body[:-1], orjson.dumps(routing))


def route(
    raw: bytes | None,
    raw_key: bytes | None,
    source: Source,
    table: RouteTable,
    now: str | None = None,
) -> Outcome:
    """Every message one input record becomes. Never raises: a failure is a dead letter.

    `now` stamps `routed_at` and the event's `observed_at`; a batch passes one for all.
    """
    value = raw if raw is not None else b""
    try:
        request = messages.decode_request(raw, max_bytes=table.max_bytes)
        target = resolve(table, request["queue"])
        if target is None:
            raise InvalidMessage(
                ErrorCode.NO_ROUTE,
                f"queue {request['queue']!r} has no route and there is no default target",
            )
        return accepted(value, request, target, source, table, now or messages.utc_now())
    except InvalidMessage as invalid:
        return rejected(raw, raw_key, invalid, source, table)
    except Exception as exc:  # a bug here must not stop the stream; the letter keeps the input
        internal = InvalidMessage(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        return rejected(raw, raw_key, internal, source, table)


def accepted(
    raw: bytes, request: TaskRequest, target: Target, source: Source, table: RouteTable, now: str
) -> Outcome:
    """The routed request on its executor topic and a `queued` event, both under the task's key.

    The event id is derived from the request's `submitted_at`, so a re-delivery (or a
    producer's retry) of the same request yields the same event and the reducer dedupes it.
    The event is built here rather than by `messages.make_event` only because this is the
    hot path; its fields are the same.
    """
    key = TaskKey.from_wire(request["key"])
    topic = table.topics[target]
    routing = {
        "target": target,
        "topic": topic,
        "routed_at": now,
        "source_partition": source.partition,
        "source_offset": source.offset,
    }
    event = queued_event(key, request, target, now)
    partition_key = key.partition_key
    return Outcome(
        messages=[
            (topic, partition_key, stamped(raw, request, routing)),
            (table.events_topic, partition_key, orjson.dumps(event)),
        ],
        target=target,
    )


def queued_event(
    key: TaskKey, request: TaskRequest, target: str | None, now: str
) -> dict[str, Any]:
    """The router's `queued` event for a request it routed at `now`.

    The reducer rebuilds this same event from a routed request's stamp when the request
    reaches it before the event, so whichever comes first, the state records one fact.
    """
    event = {
        "schema_version": messages.SCHEMA_VERSION,
        "event_id": messages.event_id(key, STAGE, State.QUEUED, request["submitted_at"]),
        "key": request["key"],
        "source": STAGE,
        "state": State.QUEUED.value,
        "reason": None,
        "observed_at": now,
    }
    if target is not None:
        event["executor"] = target
    return event


def rejected(
    raw: bytes | None,
    raw_key: bytes | None,
    error: InvalidMessage,
    source: Source,
    table: RouteTable,
    *,
    ends_task: bool = True,
) -> Outcome:
    """A DeadLetter under the original key, and a `dead_lettered` event if a task key survives.

    A rejected control message (`ends_task=False`) is only a letter: a bad cancel must not end
    its task, nor doom a request that has yet to arrive. The letter keeps the exact original
    bytes when they fit in a message (see `messages.make_dead_letter`), since a letter that
    cannot be published would stop the stream.
    """
    letter = messages.make_dead_letter(
        raw,
        raw_key,
        error,
        topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        timestamp=source.timestamp,
        stage=STAGE,
        max_bytes=table.max_bytes,
    )
    outcome = Outcome(
        messages=[(table.dlq_topic, raw_key, messages.encode(letter))], reason=error.code
    )
    if ends_task and letter["task_key"] is not None:
        key = TaskKey.from_wire(letter["task_key"])
        event = messages.make_event(
            key,
            STAGE,
            State.DEAD_LETTERED,
            discriminator=f"{source.topic}/{source.partition}/{source.offset}",
            reason=f"{error.code.value}: {error.message}"[:REASON_LIMIT],
        )
        outcome.messages.append((table.events_topic, key.partition_key, messages.encode(event)))
    return outcome
