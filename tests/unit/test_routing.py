"""Routing rules: where each request goes, and what every kind of bad input becomes."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import messages
from pipeline.messages import ErrorCode, Kind, State, TaskKey
from pipeline.routing import RouteTable, Source, Target, resolve, route, route_control

SOURCE = Source("tasks.requests", 3, 41, 1_767_225_600_000)
KEY = TaskKey("etl", "extract", "manual__1", -1, 2)


def table(
    routes: dict[str, Target] | None = None,
    default: Target | None = "celery",
    max_bytes: int = 10_000,
) -> RouteTable:
    return RouteTable(
        kubernetes_queue="k8s",
        routes=routes or {},
        default_target=default,
        topics={"kubernetes": "out.kube", "celery": "out.celery"},
        events_topic="out.events",
        dlq_topic="out.dlq",
        max_bytes=max_bytes,
    )


def request_bytes(queue: str = "default", key: TaskKey = KEY, **fields: Any) -> bytes:
    return messages.encode({**messages.make_request(key, ["echo", "hi"], queue), **fields})


def with_key(**fields: Any) -> bytes:
    """A valid request whose key fields are spelled as given (e.g. `2.0`)."""
    return messages.encode({**orjson.loads(request_bytes()), "key": {**KEY.to_wire(), **fields}})


@pytest.mark.parametrize(
    ("queue", "routes", "default", "expected"),
    [
        ("k8s", {}, "celery", "kubernetes"),
        ("k8s", {"k8s": "celery"}, "celery", "kubernetes"),  # kubernetes_queue wins, as Airflow
        ("gpu", {"gpu": "kubernetes"}, "celery", "kubernetes"),
        ("default", {"gpu": "kubernetes"}, "celery", "celery"),
        ("default", {}, "kubernetes", "kubernetes"),
        ("default", {}, None, None),
        ("batch", {"batch": "celery"}, None, "celery"),
    ],
)
def test_resolve_prefers_kubernetes_queue_then_table_then_default(
    queue: str, routes: dict[str, Target], default: Target | None, expected: Target | None
) -> None:
    assert resolve(table(routes, default), queue) == expected


queues = st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
keys = st.builds(TaskKey, names, names, names, st.integers(-1, 50), st.integers(0, 9))


@given(queue=queues, key=keys, offset=st.integers(0, 2**40))
def test_a_valid_request_goes_to_its_target_under_its_partition_key_with_a_queued_event(
    queue: str, key: TaskKey, offset: int
) -> None:
    raw = request_bytes(queue, key)
    source = Source("tasks.requests", 1, offset)
    outcome = route(raw, key.partition_key, source, table({"gpu": "kubernetes"}))
    target = resolve(table({"gpu": "kubernetes"}), queue)
    assert outcome.target == target and outcome.reason is None
    [(topic, out_key, value), (events, event_key, event_raw)] = outcome.messages
    assert topic == ("out.kube" if target == "kubernetes" else "out.celery")
    assert events == "out.events"
    assert out_key == event_key == key.partition_key
    assert value.startswith(raw[:-1])  # the producer's bytes, then the stamp
    routed = messages.decode_request(value)
    stamp = routed.pop("routing")
    assert routed == orjson.loads(raw)
    assert stamp == {
        "target": target,
        "topic": topic,
        "routed_at": stamp["routed_at"],
        "source_partition": 1,
        "source_offset": offset,
    }
    event = messages.decode_event(event_raw)
    assert (event["state"], event["source"], event["executor"]) == ("queued", "router", target)
    assert TaskKey.from_wire(event["key"]) == key


def test_a_redelivered_request_yields_the_same_event_id_and_a_new_try_another() -> None:
    raw = request_bytes()
    first = route(raw, KEY.partition_key, SOURCE, table())
    again = route(raw, KEY.partition_key, Source("tasks.requests", 3, 99), table())
    retry = route(
        request_bytes(key=TaskKey("etl", "extract", "manual__1", -1, 3)), None, SOURCE, table()
    )
    ids = [orjson.loads(o.messages[1][2])["event_id"] for o in (first, again, retry)]
    assert ids[0] == ids[1] != ids[2]


def test_the_partition_key_comes_from_the_request_not_the_producer() -> None:
    outcome = route(request_bytes(), b"some-other-key", SOURCE, table())
    assert {m[1] for m in outcome.messages} == {KEY.partition_key}


def test_an_earlier_routing_stamp_is_replaced() -> None:
    stale = {"target": "celery", "topic": "old", "routed_at": "2020-01-01T00:00:00Z"}
    outcome = route(request_bytes("k8s", routing=stale), None, SOURCE, table())
    stamp = orjson.loads(outcome.messages[0][2])["routing"]
    assert (stamp["target"], stamp["topic"], stamp["source_offset"]) == (
        "kubernetes",
        "out.kube",
        41,
    )


INVALID: list[tuple[str, bytes | None, ErrorCode, bool]] = [
    ("not json", b"{nope", ErrorCode.NOT_JSON, False),
    ("tombstone", None, ErrorCode.TOMBSTONE, False),
    ("empty", b"", ErrorCode.NOT_JSON, False),
    ("too deep", b'{"key": ' + b"[" * 65 + b"]" * 65 + b"}", ErrorCode.TOO_DEEP, False),
    ("float try", with_key(try_number=1.5), ErrorCode.SCHEMA, False),
    ("array", b"[1, 2]", ErrorCode.NOT_OBJECT, False),
    ("no command", request_bytes(command=[]), ErrorCode.SCHEMA, True),
    ("bad queue", request_bytes("has space"), ErrorCode.SCHEMA, True),
    ("unknown field", request_bytes(extra=1), ErrorCode.SCHEMA, True),
    ("future version", request_bytes(schema_version=2), ErrorCode.UNKNOWN_SCHEMA_VERSION, True),
    ("oversized", request_bytes(env={"PAD": "x" * 10_001}), ErrorCode.OVERSIZED, True),
    ("no key", orjson.dumps({"queue": "q"}), ErrorCode.SCHEMA, False),
]


@pytest.mark.parametrize(
    ("raw", "code", "has_key"), [i[1:] for i in INVALID], ids=[i[0] for i in INVALID]
)
def test_invalid_input_becomes_a_dead_letter_with_the_exact_bytes_and_maybe_an_event(
    raw: bytes | None, code: ErrorCode, has_key: bool
) -> None:
    outcome = route(raw, b"producer-key", SOURCE, table())
    assert outcome.reason == code and outcome.target is None
    (dlq, letter_key, letter_raw), *events = outcome.messages
    assert (dlq, letter_key) == ("out.dlq", b"producer-key")
    letter = messages.decode(Kind.DEAD_LETTER, letter_raw)
    key, kept = messages.dead_letter_original(letter)
    if code is ErrorCode.OVERSIZED:  # the letter must fit where the original did not
        assert len(letter_raw) <= 10_000 and "truncated" in letter
        assert raw is not None and raw.startswith(kept)
    else:
        assert (key, kept) == (b"producer-key", raw or b"")
    assert letter["error"]["code"] == code.value and letter["stage"] == "router"
    assert letter["source"] == {"topic": "tasks.requests", "partition": 3, "offset": 41,
                                "timestamp": 1_767_225_600_000}  # fmt: skip
    assert len(events) == int(has_key)
    for topic, event_key, event_raw in events:
        event = messages.decode_event(event_raw)
        assert topic == "out.events" and event_key == KEY.partition_key
        assert event["state"] == State.DEAD_LETTERED and str(event["reason"]).startswith(code.value)
        assert TaskKey.from_wire(event["key"]) == KEY


def test_an_unroutable_queue_without_default_is_dead_lettered_as_no_route() -> None:
    outcome = route(request_bytes("nowhere"), KEY.partition_key, SOURCE, table(default=None))
    assert outcome.reason == ErrorCode.NO_ROUTE
    letter = orjson.loads(outcome.messages[0][2])
    assert "'nowhere' has no route" in letter["error"]["message"]
    assert orjson.loads(outcome.messages[1][2])["state"] == "dead_lettered"


def test_an_unexpected_failure_is_dead_lettered_as_internal_instead_of_raised() -> None:
    broken = RouteTable("k8s", {}, "celery", {}, "out.events", "out.dlq", 10_000)  # no topics
    outcome = route(request_bytes(), None, SOURCE, broken)
    assert outcome.reason == ErrorCode.INTERNAL
    assert orjson.loads(outcome.messages[0][2])["error"]["message"].startswith("KeyError")


def test_input_too_big_to_carry_whole_keeps_a_prefix_its_size_and_digest() -> None:
    raw = b"x" * 50_000
    outcome = route(raw, b"k" * 9000, SOURCE, table(max_bytes=10_000))
    (_, _, letter_raw), *_ = outcome.messages
    assert len(letter_raw) <= 10_000
    letter = messages.decode(Kind.DEAD_LETTER, letter_raw)
    key, kept = messages.dead_letter_original(letter)
    assert raw.startswith(kept) and len(kept) > 2000
    assert key is not None and len(key) == messages.KEY_QUOTE_LIMIT
    assert letter["truncated"]["original"] == {
        "size": 50_000,
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    assert letter["truncated"]["original_key"]["size"] == 9000


def test_a_float_spelled_integer_key_names_the_same_try() -> None:
    spelled = with_key(map_index=-1.0, try_number=float(KEY.try_number))
    outcome = route(spelled, None, SOURCE, table())
    assert outcome.target is not None
    routed = messages.decode_request(outcome.messages[0][2])
    event = messages.decode_event(outcome.messages[1][2])
    assert routed["key"] == event["key"] == KEY.to_wire()
    assert type(routed["key"]["try_number"]) is int
    assert outcome.messages[0][1] == KEY.partition_key


@given(raw=st.binary(max_size=300) | st.none(), raw_key=st.binary(max_size=20) | st.none())
def test_any_bytes_route_or_dead_letter_and_never_raise(
    raw: bytes | None, raw_key: bytes | None
) -> None:
    outcome = route(raw, raw_key, SOURCE, table())
    assert (outcome.target is None) != (outcome.reason is None)
    assert outcome.messages
    if outcome.reason is not None:
        messages.decode(Kind.DEAD_LETTER, outcome.messages[0][2])


def test_a_cancel_goes_to_both_executor_topics_under_the_tasks_partition_key() -> None:
    control = messages.encode(messages.make_control(KEY, "stop", "alice"))
    outcome = route_control(control, b"whatever", SOURCE, table())
    assert sorted(outcome.messages) == sorted(
        [("out.kube", KEY.partition_key, control), ("out.celery", KEY.partition_key, control)]
    )
    assert outcome.target is None and outcome.reason is None


def test_an_invalid_cancel_is_dead_lettered() -> None:
    outcome = route_control(b'{"action": "explode"}', b"k", SOURCE, table())
    assert [m[0] for m in outcome.messages] == ["out.dlq"]
    assert outcome.reason is ErrorCode.SCHEMA


def test_a_cancel_over_the_size_limit_is_only_dead_lettered_and_ends_no_task() -> None:
    control = messages.make_control(KEY, "x" * 5_000, "alice")
    outcome = route_control(messages.encode(control), b"k", SOURCE, table(max_bytes=1_000))
    assert [m[0] for m in outcome.messages] == ["out.dlq"]
    assert outcome.reason is ErrorCode.OVERSIZED


def test_a_malformed_cancel_naming_a_task_does_not_dead_letter_that_task() -> None:
    control = {**messages.make_control(KEY, "stop", "alice"), "action": "explode"}
    outcome = route_control(orjson.dumps(control), b"k", SOURCE, table())
    assert [m[0] for m in outcome.messages] == ["out.dlq"]
    assert outcome.reason is ErrorCode.SCHEMA
