"""Hostile input at every decode path a stage reads a topic through: it is a value or a
reason, never an exception, and what a stage writes about it always fits in a message."""

from __future__ import annotations

import types
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import launches, messages, untrusted
from pipeline.celery_bridge.inflight import InFlightSet
from pipeline.celery_bridge.monitor import CeleryMonitor
from pipeline.messages import ErrorCode, InvalidMessage, Kind, State, TaskKey
from pipeline.reducer.fold import attach_request, fit, fold_event
from pipeline.routing import RouteTable, Source, route
from pipeline.watcher.checkpoint import Checkpoint

KEY = TaskKey("dag", "task", "run", 3, 2)
SOURCE = Source("tasks.requests", 0, 5, None)
TABLE = RouteTable(
    "kubernetes", {}, "celery", {"kubernetes": "k", "celery": "c"}, "events", "dlq", 20_000
)


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


def reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    return 0


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=30,
)
valid_request = messages.make_request(KEY, ["python", "-c", "pass"], "default")
valid_event = messages.make_event(KEY, "watcher", State.RUNNING, executor="kubernetes")
fields = st.sampled_from(sorted({*valid_request, *valid_event, "key", "nope"}))
key_fields = st.sampled_from(["dag_id", "task_id", "run_id", "map_index", "try_number"])


@st.composite
def hostile(draw: st.DrawFn) -> bytes | None:
    """Random bytes, tombstones, deep or truncated JSON, wrong types, floats, odd versions."""
    base = draw(st.sampled_from([valid_request, valid_event]))
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return None
    if kind == 2:
        return nested(draw(st.integers(60, 1200)))
    if kind == 3:
        raw = messages.encode(base)
        return raw[: draw(st.integers(0, len(raw)))]
    if kind == 4:
        return messages.encode({**base, draw(fields): draw(json_values)})
    if kind == 5:
        key = {**base["key"], draw(key_fields): draw(json_values)}
        return messages.encode({**base, "key": key})
    if kind == 6:
        return messages.encode({**base, "schema_version": draw(st.sampled_from([0, 2, 1.0, "1"]))})
    return messages.encode(base).replace(b'"try_number":2', b'"try_number":2.0')


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_the_depth_check_agrees_with_the_parsed_depth(value: Any) -> None:
    raw = orjson.dumps(value)
    for limit in (0, 1, 2, 3):
        assert untrusted.too_deep(raw, limit) is (reference_depth(value) > limit)


def test_brackets_inside_strings_do_not_count_and_escaped_quotes_do_not_end_strings() -> None:
    deep_text = orjson.dumps({"s": "[[[[" * 100 + '\\"[[' + "{" * 100})
    assert not untrusted.too_deep(deep_text, 2)
    assert untrusted.too_deep(nested(65), 64) and not untrusted.too_deep(nested(64), 64)


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("depth", [200, 255, 300, 500, 1100])
def test_nesting_past_every_parser_limit_is_a_reason_not_a_crash(kind: Kind, depth: int) -> None:
    raw = b'{"schema_version":1,"key":' + nested(depth) + b"}"
    with pytest.raises(InvalidMessage) as caught:
        messages.decode(kind, raw)
    assert caught.value.code is ErrorCode.TOO_DEEP


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(raw=hostile(), kind=st.sampled_from(list(Kind)))
def test_decode_returns_a_message_or_raises_invalid_message_only(
    raw: bytes | None, kind: Kind
) -> None:
    try:
        message = messages.decode(kind, raw)
    except InvalidMessage as exc:
        assert exc.code in ErrorCode
        return
    orjson.dumps(message)  # whatever passed can be encoded again
    key = message if kind is Kind.TASK_KEY else message.get("key")
    if isinstance(key, dict):
        assert type(key["map_index"]) is int and type(key["try_number"]) is int


def test_a_tombstone_is_told_apart_from_an_empty_value() -> None:
    codes = []
    for raw in (None, b""):
        with pytest.raises(InvalidMessage) as caught:
            messages.decode_event(raw)
        codes.append(caught.value.code)
    assert codes == [ErrorCode.TOMBSTONE, ErrorCode.NOT_JSON]


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=hostile() | st.binary(min_size=5_000, max_size=60_000),
    raw_key=st.none() | st.binary(max_size=9_000),
    reason=st.text(max_size=5_000),
    max_bytes=st.integers(4096, 50_000),
)
def test_a_dead_letter_always_fits_and_is_exact_when_it_can_be(
    raw: bytes | None, raw_key: bytes | None, reason: str, max_bytes: int
) -> None:
    letter = messages.make_dead_letter(
        raw, raw_key, InvalidMessage(ErrorCode.SCHEMA, reason), topic="tasks.events",
        partition=0, offset=1, timestamp=None, stage="reducer", max_bytes=max_bytes,
    )  # fmt: skip
    encoded = messages.encode(letter)
    assert len(encoded) <= max_bytes
    messages.decode(Kind.DEAD_LETTER, encoded, max_bytes=max_bytes)
    key, value = messages.dead_letter_original(letter)
    if "truncated" not in letter:
        assert (key, value) == (raw_key, raw or b"")
    else:
        assert (raw or b"").startswith(value) and (raw_key or b"").startswith(key or b"")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(raw=hostile(), raw_key=st.none() | st.binary(max_size=40))
def test_the_router_routes_or_dead_letters_within_the_limit(
    raw: bytes | None, raw_key: bytes | None
) -> None:
    outcome = route(raw, raw_key, SOURCE, TABLE)
    assert (outcome.target is None) != (outcome.reason is None)
    assert all(len(value) <= TABLE.max_bytes for _, _, value in outcome.messages)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(raw=hostile())
def test_the_launchers_ledger_follower_and_the_celery_monitor_never_raise(
    raw: bytes | None,
) -> None:
    record = launches.decode_record(raw)
    if record is not None:
        launches.LaunchLedger(3600).apply(record)
    monitor = types.SimpleNamespace(inflight=InFlightSet("celery-dispatcher", "celery-monitor"))
    tp = TopicPartition("tasks.events", 0)
    record = types.SimpleNamespace(value=raw, offset=9)
    CeleryMonitor.learn(monitor, {tp: [record]})  # type: ignore[arg-type, dict-item]
    assert monitor.inflight.read_to[tp] == 10


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(raw=hostile())
def test_what_the_reducer_folds_always_fits_in_the_changelog(raw: bytes | None) -> None:
    max_bytes = 20_000
    try:
        event = messages.decode_event(raw, max_bytes=max_bytes)
    except InvalidMessage:
        event = None
    if event is not None:
        state, _ = fold_event(None, event, 50)
        kept = fit(state, max_bytes)
        assert kept is not None and len(orjson.dumps(kept)) <= max_bytes


def test_a_request_too_big_to_keep_is_not_kept_and_the_state_says_so() -> None:
    request = messages.make_request(KEY, ["python", "-c", "x" * 30_000], "default")
    size = len(messages.encode(request))
    state, _ = attach_request(None, request, 50, size=size, keep_bytes=5_000)
    assert "request" not in state and state["request_dropped"] == size
    assert state["state"] == "queued"
    again, _ = attach_request(state, request, 50, size=size, keep_bytes=5_000)
    assert again == state
    messages.validate(Kind.TASK_STATE, state)


def test_fit_trims_history_and_request_before_giving_up() -> None:
    request = messages.make_request(KEY, ["python", "-c", "x" * 3_000], "default")
    state, _ = attach_request(None, request, 50)
    for n in range(40):
        event = messages.make_event(KEY, "watcher", State.RUNNING, discriminator=str(n))
        state = {**state, "history": [*state["history"], {**event, "reason": "r" * 200}]}  # type: ignore[list-item]
    kept = fit(state, 6_000)
    assert kept is not None and "request" not in kept and len(kept["history"]) == 5
    assert fit(state, 100) is None


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(raw=hostile() | st.builds(lambda v: orjson.dumps({"open_pods": v}), json_values))
def test_an_unreadable_watcher_checkpoint_means_start_from_a_list(raw: bytes | None) -> None:
    assert Checkpoint.read(raw) is None
