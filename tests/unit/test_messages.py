"""The wire contracts: schemas, codecs, partition keys and event ids."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import messages
from pipeline.messages import ErrorCode, InvalidMessage, Kind, State, TaskKey

names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
)
task_keys = st.builds(
    TaskKey,
    dag_id=names,
    task_id=names,
    run_id=names,
    map_index=st.integers(-1, 10_000),
    try_number=st.integers(0, 1000),
)
argvs = st.lists(st.text(max_size=30), min_size=1, max_size=6).filter(lambda argv: argv[0] != "")
queues = st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)


def valid_request() -> dict[str, Any]:
    return dict(messages.make_request(TaskKey("d", "t", "r"), ["echo", "hi"], "kubernetes"))


@pytest.mark.parametrize("kind", list(Kind))
def test_every_schema_is_valid_2020_12_and_its_examples_conform(kind: Kind) -> None:
    document = messages.schema(kind)
    jsonschema.Draft202012Validator.check_schema(document)
    assert document["$id"].endswith(f"{kind.value}.schema.json")
    assert document["examples"], "every schema carries an example"
    for example in document["examples"]:
        messages.validate(kind, example)


@given(key=task_keys, command=argvs, queue=queues, priority=st.integers(-100, 100))
def test_request_round_trips_through_the_codec(
    key: TaskKey, command: list[str], queue: str, priority: int
) -> None:
    request = messages.make_request(key, command, queue, priority=priority, labels={"a": "b"})
    decoded = messages.decode_request(messages.encode(request))
    assert decoded == request
    assert TaskKey.from_wire(decoded["key"]) == key


@given(key=task_keys, state=st.sampled_from(list(State)), discriminator=st.text(max_size=20))
def test_event_round_trips_and_its_id_is_deterministic(
    key: TaskKey, state: State, discriminator: str
) -> None:
    event = messages.make_event(key, "watcher", state, discriminator=discriminator, reason="x")
    again = messages.make_event(key, "watcher", state, discriminator=discriminator, reason="y")
    assert messages.decode_event(messages.encode(event)) == event
    assert event["event_id"] == again["event_id"]


def test_event_ids_differ_by_source_state_try_and_discriminator() -> None:
    key = TaskKey("d", "t", "r")
    ids = {
        messages.event_id(key, "watcher", "running"),
        messages.event_id(key, "launcher", "running"),
        messages.event_id(key, "watcher", "failed"),
        messages.event_id(TaskKey("d", "t", "r", try_number=2), "watcher", "running"),
        messages.event_id(key, "watcher", "running", "uid-1/42"),
    }
    assert len(ids) == 5


@given(key=task_keys, other_try=st.integers(0, 1000))
def test_partition_key_ignores_try_number(key: TaskKey, other_try: int) -> None:
    retried = TaskKey(key.dag_id, key.task_id, key.run_id, key.map_index, other_try)
    assert retried.partition_key == key.partition_key
    moved = TaskKey(key.dag_id, key.task_id, key.run_id, key.map_index + 1, key.try_number)
    assert moved.partition_key != key.partition_key


def _without(field: str) -> dict[str, Any]:
    request = valid_request()
    del request[field]
    return request


def _with(**changes: Any) -> dict[str, Any]:
    return {**valid_request(), **changes}


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (_without("key"), '"key" is a required property'),
        (_without("command"), '"command" is a required property'),
        (_with(command=[]), "at /command"),
        (_with(command="echo hi"), "at /command"),
        (_with(command=["", "x"]), "at /command/0"),
        (_with(queue="no spaces allowed"), "at /queue"),
        (_with(key={"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1}), "try_number"),
        (_with(key={**valid_request()["key"], "map_index": -2}), "at /key/map_index"),
        (_with(submitted_at="yesterday"), "at /submitted_at"),
        (_with(env={"1BAD": "x"}), "at /env"),
        (_with(surprise=True), "surprise"),
    ],
)
def test_invalid_requests_are_rejected_with_a_readable_reason(
    request_: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        messages.decode_request(orjson.dumps(request_))
    assert caught.value.code is ErrorCode.SCHEMA
    assert reason in caught.value.message


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", ErrorCode.NOT_JSON),
        (b"[1, 2]", ErrorCode.NOT_OBJECT),
        (orjson.dumps(_with(schema_version=2)), ErrorCode.UNKNOWN_SCHEMA_VERSION),
    ],
)
def test_undecodable_input_gets_its_own_error_code(raw: bytes, code: ErrorCode) -> None:
    with pytest.raises(InvalidMessage) as caught:
        messages.decode_request(raw)
    assert caught.value.code is code


def test_oversized_message_is_rejected_before_parsing() -> None:
    raw = messages.encode(valid_request())
    with pytest.raises(InvalidMessage) as caught:
        messages.decode_request(raw, max_bytes=len(raw) - 1)
    assert caught.value.code is ErrorCode.OVERSIZED


@pytest.mark.parametrize(
    ("kind", "message", "reason"),
    [
        (Kind.TASK_EVENT, {"schema_version": 1}, '"event_id" is a required property'),
        (Kind.TASK_STATE, {"schema_version": 1, "state": "bogus"}, "required property"),
        (Kind.DEAD_LETTER, {"schema_version": 1, "original": 3}, "required property"),
    ],
)
def test_other_schemas_reject_crafted_messages(kind: Kind, message: Any, reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        messages.validate(kind, message)
    assert reason in caught.value.message


def test_event_rejects_an_unknown_state() -> None:
    event = messages.make_event(TaskKey("d", "t", "r"), "watcher", State.RUNNING)
    event["state"] = "exploded"
    with pytest.raises(InvalidMessage, match="at /state"):
        messages.validate(Kind.TASK_EVENT, event)


@given(raw=st.binary(max_size=200), raw_key=st.none() | st.binary(max_size=50))
def test_dead_letter_keeps_the_exact_original_bytes(raw: bytes, raw_key: bytes | None) -> None:
    error = InvalidMessage(ErrorCode.NOT_JSON, "not valid JSON")
    letter = messages.make_dead_letter(
        raw, raw_key, error, topic="t", partition=1, offset=7, timestamp=None, stage="router"
    )
    messages.validate(Kind.DEAD_LETTER, letter)
    assert messages.dead_letter_original(letter) == (raw_key, raw)
    assert base64.b64decode(letter["original"]) == raw


def test_dead_letter_recovers_the_task_key_of_an_invalid_request() -> None:
    request = _without("command")
    letter = messages.make_dead_letter(
        orjson.dumps(request), None, InvalidMessage(ErrorCode.SCHEMA, "no command"),
        topic="t", partition=0, offset=0, timestamp=1, stage="router",
    )  # fmt: skip
    assert letter["task_key"] == request["key"]


@pytest.mark.parametrize(
    ("spec", "key", "expected"),
    [
        ("etl", TaskKey("etl", "a", "r"), True),
        ("etl/a", TaskKey("etl", "a", "r"), True),
        ("etl/a/r/-1", TaskKey("etl", "a", "r"), True),
        ("etl/a/r/3", TaskKey("etl", "a", "r", 3), True),
        ("etl/b", TaskKey("etl", "a", "r"), False),
        ("et", TaskKey("etl", "a", "r"), False),
    ],
)
def test_key_matcher_selects_by_key_components(spec: str, key: TaskKey, expected: bool) -> None:
    assert messages.key_matcher(spec)(key.partition_key) is expected


def test_key_matcher_ignores_foreign_keys() -> None:
    match = messages.key_matcher("etl")
    assert not match(None)
    assert not match(b"plain")


def test_control_round_trips_and_rejects_an_unknown_action() -> None:
    control = messages.make_control(TaskKey("d", "t", "r", 2, 3), "stuck", "alice")
    assert messages.decode_control(messages.encode(control)) == control
    with pytest.raises(InvalidMessage, match="at /action"):
        messages.decode_control(messages.encode({**control, "action": "explode"}))
    other = messages.make_control(TaskKey("d", "t", "r", 2, 3), "stuck", "alice")
    assert other["control_id"] != control["control_id"], "two cancels are two requests"


def test_cancelled_event_carries_who_and_why_and_dedupes_per_source() -> None:
    key = TaskKey("d", "t", "r")
    info = messages.cancel_info(messages.make_control(key, "", "bob"))
    event = messages.make_cancelled(key, "launcher", info, executor="kubernetes")
    messages.validate(Kind.TASK_EVENT, event)
    assert (event["state"], event["reason"], event["cancel"]) == (
        "cancelled",
        "cancelled by bob",
        info,
    )
    again = messages.make_cancelled(key, "launcher", info)
    assert again["event_id"] == event["event_id"]
    assert State.CANCELLED in messages.TERMINAL_STATES


def test_epoch_s_reads_a_wire_time_and_gives_none_for_what_the_parser_refuses() -> None:
    assert messages.epoch_s("1970-01-01T00:01:00Z") == 60.0
    assert messages.epoch_s("2026-02-30T00:00:00Z") is None  # a date-time shape, no such day
    assert messages.epoch_s(None) is None
