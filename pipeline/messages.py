"""Wire contracts: the task key, message codecs and validation against `schemas/`.

The JSON Schemas are the single source of truth; this module compiles them once and
adds only what a schema cannot say: partition keys, deterministic event ids, encodings.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Final, NotRequired, TypedDict

import jsonschema_rs
import orjson

from pipeline import untrusted

SCHEMA_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 1_000_000
"""What a decode accepts unless told otherwise (Kafka's default `message.max.bytes`)."""
ERROR_TEXT_LIMIT: Final = 1000
"""Characters of a rejection's reason a dead letter quotes."""
KEY_QUOTE_LIMIT: Final = 4096
"""Bytes of an original Kafka key a dead letter keeps (task keys are far shorter)."""


class Kind(StrEnum):
    """A message type, named after its schema file."""

    TASK_KEY = "task-key"
    TASK_REQUEST = "task-request"
    TASK_EVENT = "task-event"
    TASK_STATE = "task-state"
    DEAD_LETTER = "dead-letter"
    TASK_CONTROL = "task-control"
    TASK_LOG = "task-log"
    LAUNCH_RECORD = "launch-record"


class State(StrEnum):
    SUBMITTED = "submitted"
    QUEUED = "queued"
    LAUNCHED = "launched"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD_LETTERED = "dead_lettered"


TERMINAL_STATES: Final = frozenset(
    {State.SUCCESS, State.FAILED, State.CANCELLED, State.DEAD_LETTERED}
)


class ErrorCode(StrEnum):
    """Why a message was rejected; the `error.code` of a DeadLetter."""

    TOMBSTONE = "tombstone"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"
    NOT_OBJECT = "not_object"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    SCHEMA = "schema"
    OVERSIZED = "oversized"
    NO_ROUTE = "no_route"
    INTERNAL = "internal"


class TaskKeyDict(TypedDict):
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int


class TaskRequest(TypedDict):
    schema_version: int
    key: TaskKeyDict
    command: list[str]
    queue: str
    submitted_at: str
    priority: NotRequired[int]
    image: NotRequired[str]
    env: NotRequired[dict[str, str]]
    executor_config: NotRequired[dict[str, Any]]
    pod_template: NotRequired[str]
    labels: NotRequired[dict[str, str]]
    routing: NotRequired[dict[str, Any]]


class CancelInfo(TypedDict):
    """Who cancelled a try and why, as a `cancelled` event and state carry it."""

    reason: str
    requested_by: str
    requested_at: str


class TaskControl(TypedDict):
    """An operator's request on one try (schemas/task-control.schema.json)."""

    schema_version: int
    control_id: str
    action: str
    key: TaskKeyDict
    reason: str
    requested_by: str
    requested_at: str


class TaskEvent(TypedDict):
    schema_version: int
    event_id: str
    key: TaskKeyDict
    source: str
    state: str
    observed_at: str
    executor: NotRequired[str]
    reason: NotRequired[str | None]
    cancel: NotRequired[CancelInfo]
    pod_name: NotRequired[str]
    namespace: NotRequired[str]
    celery_task_id: NotRequired[str]
    resource_version: NotRequired[str]
    exit_code: NotRequired[int]


class DeadLetter(TypedDict):
    schema_version: int
    original: str
    original_key: str | None
    error: dict[str, str]
    source: dict[str, Any]
    stage: str
    task_key: TaskKeyDict | None
    first_seen: str
    truncated: NotRequired[dict[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True, order=True)
class TaskKey:
    """Airflow's TaskInstanceKey."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    try_number: int = 1

    @classmethod
    def from_wire(cls, d: TaskKeyDict | dict[str, Any]) -> TaskKey:
        return cls(d["dag_id"], d["task_id"], d["run_id"], d["map_index"], d["try_number"])

    def to_wire(self) -> TaskKeyDict:
        return {
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "map_index": self.map_index,
            "try_number": self.try_number,
        }

    @property
    def partition_key(self) -> bytes:
        """The Kafka message key: the task key without try_number, so tries stay in order."""
        return orjson.dumps([self.dag_id, self.task_id, self.run_id, self.map_index])

    def __str__(self) -> str:
        mapped = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{mapped}@{self.run_id}#{self.try_number}"


class InvalidMessage(ValueError):
    """A message that fails its contract; carries the DeadLetter error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- schemas ---------------------------------------------------------------------------------


def schema_text(kind: Kind) -> bytes:
    return (resources.files("pipeline") / "schemas" / f"{kind.value}.schema.json").read_bytes()


@cache
def schema(kind: Kind) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(schema_text(kind))
    return loaded


@cache
def _registry() -> jsonschema_rs.Registry:
    return jsonschema_rs.Registry([(schema(k)["$id"], schema(k)) for k in Kind])


@cache
def validator(kind: Kind) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(schema(kind), registry=_registry(), validate_formats=True)


def _describe(errors: list[jsonschema_rs.ValidationError]) -> str:
    parts = []
    for err in errors[:3]:
        path = "/" + "/".join(str(p) for p in err.instance_path)
        parts.append(f"at {path}: {err.message}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def validate(kind: Kind, message: Any) -> None:
    """Raise InvalidMessage with a readable reason unless `message` satisfies its schema."""
    v = validator(kind)
    if v.is_valid(message):
        return
    if isinstance(message, dict) and message.get("schema_version") not in (None, SCHEMA_VERSION):
        raise InvalidMessage(
            ErrorCode.UNKNOWN_SCHEMA_VERSION,
            f"schema_version {message['schema_version']!r} is not supported "
            f"(this build reads {SCHEMA_VERSION})",
        )
    raise InvalidMessage(ErrorCode.SCHEMA, _describe(list(v.iter_errors(message))))


# -- codecs ----------------------------------------------------------------------------------


def encode(message: Any) -> bytes:
    return orjson.dumps(message)


def right_sized(encoded: bytes) -> bytes:
    """A copy of its own size, for encoded bytes kept long: orjson (>= 3.12) returns its
    output in a buffer of at least 4 kB and never shrinks it."""
    return bytes(memoryview(encoded))


def decode(kind: Kind, raw: bytes | None, *, max_bytes: int | None = None) -> Any:
    """Parse and validate one message; every failure is an InvalidMessage with its code.

    Size and nesting are checked on the bytes before parsing, so no input reaches a parser,
    validator or encoder that could raise something else; integers spelled as floats
    (`2.0`, which JSON Schema counts as an integer) come out as ints.
    """
    if raw is None:
        raise InvalidMessage(ErrorCode.TOMBSTONE, "a tombstone (null value), not a message")
    limit = MAX_MESSAGE_BYTES if max_bytes is None else max_bytes
    if len(raw) > limit:
        raise InvalidMessage(
            ErrorCode.OVERSIZED, f"message is {len(raw)} bytes, the limit is {limit}"
        )
    if untrusted.too_deep(raw):
        raise InvalidMessage(
            ErrorCode.TOO_DEEP, f"nested deeper than {untrusted.MAX_DEPTH} arrays or objects"
        )
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(ErrorCode.NOT_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise InvalidMessage(
            ErrorCode.NOT_OBJECT, f"expected a JSON object, got {type(message).__name__}"
        )
    try:
        validate(kind, message)
    except InvalidMessage:
        raise
    except (ValueError, TypeError) as exc:  # the validator's own limits, never a crash
        raise InvalidMessage(ErrorCode.SCHEMA, f"cannot be validated: {exc}") from None
    _integral(kind, message)
    return message


_INTEGER_FIELDS: Final = {
    Kind.TASK_REQUEST: ("schema_version", "priority"),
    Kind.TASK_EVENT: ("schema_version", "exit_code"),
    Kind.TASK_STATE: ("schema_version", "exit_code", "redriven", "illegal_transitions"),
    Kind.DEAD_LETTER: ("schema_version",),
}


def _integral(kind: Kind, message: dict[str, Any]) -> None:
    """Turn the validated integers of a message that were spelled as floats into ints, so
    `"try_number": 2.0` names the same try (and the same pod, record and URL) as `2`."""
    for name in _INTEGER_FIELDS.get(kind, ()):
        if type(message.get(name)) is float:
            message[name] = int(message[name])
    key = message if kind is Kind.TASK_KEY else message.get("key")
    if isinstance(key, dict):
        for name in ("map_index", "try_number"):
            if type(key.get(name)) is float:
                key[name] = int(key[name])


def decode_request(raw: bytes | None, *, max_bytes: int | None = None) -> TaskRequest:
    request: TaskRequest = decode(Kind.TASK_REQUEST, raw, max_bytes=max_bytes)
    return request


def decode_event(raw: bytes | None, *, max_bytes: int | None = None) -> TaskEvent:
    event: TaskEvent = decode(Kind.TASK_EVENT, raw, max_bytes=max_bytes)
    return event


def looks_like_control(raw: bytes) -> bool:
    """A cheap first test for a TaskControl among requests (the executor topics carry both);
    `decode_control` decides."""
    return b'"control_id"' in raw and b'"action"' in raw


def decode_control(raw: bytes | None, *, max_bytes: int | None = None) -> TaskControl:
    control: TaskControl = decode(Kind.TASK_CONTROL, raw, max_bytes=max_bytes)
    return control


def recover_key(raw: bytes | None) -> TaskKey | None:
    """Best-effort task key from a rejected message, so its failure can be reported."""
    if raw is None or len(raw) > MAX_MESSAGE_BYTES or untrusted.too_deep(raw):
        return None
    try:
        candidate = orjson.loads(raw)["key"]
        validate(Kind.TASK_KEY, candidate)
    except (ValueError, TypeError, KeyError, IndexError):  # InvalidMessage is a ValueError
        return None
    _integral(Kind.TASK_KEY, candidate)
    return TaskKey.from_wire(candidate)


# -- construction ----------------------------------------------------------------------------


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """A wire timestamp (ISO-8601, `Z` or an offset) as an aware datetime."""
    return datetime.fromisoformat(text)


def epoch_s(text: object) -> float | None:
    """A wire timestamp as epoch seconds, or None when it is not one the parser takes (a
    value the schema let through can still be a date that does not exist)."""
    try:
        return parse_time(text).timestamp()  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None


def event_id(key: TaskKey, source: str, state: str, discriminator: str = "") -> str:
    """Deterministic id: the same fact reported twice gets the same id, so it dedupes."""
    material = orjson.dumps([*key.to_wire().values(), source, state, discriminator])
    return hashlib.blake2b(material, digest_size=16).hexdigest()


def make_request(key: TaskKey, command: list[str], queue: str, **optional: Any) -> TaskRequest:
    request: TaskRequest = {
        "schema_version": SCHEMA_VERSION,
        "key": key.to_wire(),
        "command": command,
        "queue": queue,
        "submitted_at": utc_now(),
    }
    request.update({k: v for k, v in optional.items() if v is not None})  # type: ignore[typeddict-item]
    return request


def make_event(
    key: TaskKey,
    source: str,
    state: State,
    *,
    discriminator: str = "",
    reason: str | None = None,
    **fields: Any,
) -> TaskEvent:
    """A TaskEvent whose id is derived from (key, source, state, discriminator)."""
    event: TaskEvent = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id(key, source, state, discriminator),
        "key": key.to_wire(),
        "source": source,
        "state": state.value,
        "reason": reason,
        "observed_at": utc_now(),
    }
    event.update({k: v for k, v in fields.items() if v is not None})  # type: ignore[typeddict-item]
    return event


def make_control(key: TaskKey, reason: str, requested_by: str) -> TaskControl:
    """A cancel request for one try; its id is random, since two cancels are two requests."""
    return {
        "schema_version": SCHEMA_VERSION,
        "control_id": uuid.uuid4().hex,
        "action": "cancel",
        "key": key.to_wire(),
        "reason": reason[:1024],
        "requested_by": requested_by[:256] or "unknown",
        "requested_at": utc_now(),
    }


def cancel_info(control: TaskControl) -> CancelInfo:
    return {
        "reason": control["reason"],
        "requested_by": control["requested_by"],
        "requested_at": control["requested_at"],
    }


def cancelled_reason(cancel: CancelInfo) -> str:
    """The one-line reason a `cancelled` event gives."""
    why = f": {cancel['reason']}" if cancel["reason"] else ""
    return f"cancelled by {cancel['requested_by']}{why}"


def make_cancelled(key: TaskKey, source: str, cancel: CancelInfo, **fields: Any) -> TaskEvent:
    """The `cancelled` event a stage publishes once the try's effect is ended (or never began).

    Its id depends on the key and source only, so a re-delivered cancel dedupes, and a second
    cancel of the same try folds away as stale.
    """
    return make_event(
        key, source, State.CANCELLED, reason=cancelled_reason(cancel), cancel=cancel, **fields
    )


def make_dead_letter(
    raw: bytes | None,
    raw_key: bytes | None,
    error: InvalidMessage,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp: int | None,
    stage: str,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> DeadLetter:
    """A DeadLetter that always fits in `max_bytes` encoded.

    It keeps the exact original key and value when they fit; otherwise a prefix of each,
    with `truncated` giving the full size and SHA-256 (such a letter cannot be re-driven
    as is). The quoted reason is bounded too, since a validator's message may quote the value.
    """
    value = raw if raw is not None else b""
    key = recover_key(raw)
    letter: DeadLetter = {
        "schema_version": SCHEMA_VERSION,
        "original": "",
        "original_key": None,
        "error": {
            "code": error.code.value,
            "message": untrusted.bounded_text(error.message, ERROR_TEXT_LIMIT),
        },
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp": timestamp,
        },
        "stage": stage,
        "task_key": key.to_wire() if key else None,
        "first_seen": utc_now(),
    }
    room = max_bytes - len(encode(letter)) - 512  # 512: the `truncated` entries, quotes
    quotes: dict[str, untrusted.Quote] = {}
    if raw_key is not None:
        quotes["original_key"] = untrusted.quote(raw_key, min(KEY_QUOTE_LIMIT, room * 3 // 4))
        encoded_key = base64.b64encode(quotes["original_key"].kept).decode()
        letter["original_key"] = encoded_key
        room -= len(encoded_key)
    quotes["original"] = untrusted.quote(value, max(room, 0) // 4 * 3)
    letter["original"] = base64.b64encode(quotes["original"].kept).decode()
    cut = {name: {"size": q.size, "sha256": q.sha256} for name, q in quotes.items() if q.truncated}
    if cut:
        letter["truncated"] = cut
    return letter


def dead_letter_original(letter: DeadLetter) -> tuple[bytes | None, bytes]:
    """The exact (key, value) bytes a DeadLetter preserved."""
    key = letter["original_key"]
    return (base64.b64decode(key) if key is not None else None), base64.b64decode(
        letter["original"]
    )


def key_matcher(spec: str) -> Callable[[bytes | None], bool]:
    """A predicate over Kafka message keys from `DAG[/TASK[/RUN[/MAP_INDEX]]]`.

    Components match the partition key in order, so `etl` selects a whole DAG and
    `etl/extract/manual__1` one task instance (every try of it).
    """
    wanted: list[str | int] = [part for part in spec.split("/") if part]
    if len(wanted) == 4:
        wanted[3] = int(wanted[3])

    def matches(raw_key: bytes | None) -> bool:
        if raw_key is None:
            return False
        try:
            parts = orjson.loads(raw_key)
        except orjson.JSONDecodeError:
            return False
        return isinstance(parts, list) and parts[: len(wanted)] == wanted

    return matches
