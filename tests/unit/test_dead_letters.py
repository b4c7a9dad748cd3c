"""Choosing dead letters and what re-driving them publishes (no broker needed)."""

from __future__ import annotations

import re

import orjson
import pytest
from rich.console import Console

from pipeline import dlq, messages
from pipeline.cli.dlq import _table
from pipeline.dlq import RedriveError, Selection, StoredLetter
from pipeline.messages import ErrorCode, InvalidMessage, TaskKey

KEY = TaskKey("d", "t", "r")


def stored(
    partition: int, offset: int, raw: bytes, code: ErrorCode = ErrorCode.SCHEMA
) -> StoredLetter:
    letter = messages.make_dead_letter(
        raw, b"orig-key", InvalidMessage(code, "bad"), topic="tasks.requests",
        partition=1, offset=7, timestamp=None, stage="router",
    )  # fmt: skip
    return StoredLetter(partition, offset, letter)


GOOD = messages.encode(messages.make_request(KEY, ["echo"], "q"))
BROKEN = b'{"key": 1,   "queue": "q"}'


def test_selection_matches_an_inclusive_offset_range_a_reason_and_a_partition() -> None:
    letters = [stored(p, o, b"x", c) for p in (0, 1) for o in range(5)
               for c in (ErrorCode.SCHEMA, ErrorCode.NOT_JSON)]  # fmt: skip
    picked = Selection(from_offset=1, to_offset=3, reason="not_json", partition=1)
    assert [(s.partition, s.offset, s.reason) for s in letters if picked.matches(s)] == [
        (1, 1, "not_json"), (1, 2, "not_json"), (1, 3, "not_json"),
    ]  # fmt: skip
    assert Selection().is_everything and not picked.is_everything


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"from_offset": 5, "to_offset": 2}, "after --to-offset"), ({"reason": "nope"}, "unknown")],
)
def test_impossible_selections_are_refused(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(RedriveError, match=error):
        Selection(**kwargs)  # type: ignore[arg-type]


def test_redrive_sends_the_exact_original_key_and_bytes_to_the_source_topic_in_order() -> None:
    out = dlq.redrive_messages([stored(1, 4, BROKEN), stored(0, 9, b"\x00\xff")])
    assert out == [("tasks.requests", b"orig-key", b"\x00\xff"),
                   ("tasks.requests", b"orig-key", BROKEN)]  # fmt: skip


def test_an_unchanged_value_keeps_the_original_bytes_and_an_edit_is_validated_and_rekeyed() -> None:
    letters = [stored(0, 1, BROKEN), stored(0, 2, BROKEN)]
    fixed = orjson.loads(GOOD)
    replaced = {(0, 1): orjson.loads(BROKEN), (0, 2): fixed}
    out = dlq.redrive_messages(letters, replaced, validate_topic="tasks.requests")
    assert out == [("tasks.requests", b"orig-key", BROKEN),
                   ("tasks.requests", KEY.partition_key, GOOD)]  # fmt: skip


def test_an_edit_that_is_still_invalid_or_names_an_unknown_letter_is_refused() -> None:
    letters = [stored(0, 1, BROKEN)]
    with pytest.raises(RedriveError, match="offset 1 is not a valid request: at /command"):
        bad = {**orjson.loads(GOOD), "command": []}
        dlq.redrive_messages(letters, {(0, 1): bad}, validate_topic="tasks.requests")
    with pytest.raises(RedriveError, match="partition 3 offset 1"):
        dlq.redrive_messages(letters, {(3, 1): orjson.loads(GOOD)})


def test_list_json_lines_read_back_as_replacements() -> None:
    letters = [stored(0, 1, BROKEN), stored(2, 5, b"plain text")]
    lines = [orjson.dumps(dlq.letter_json(s)).decode() for s in letters]
    assert dlq.replacements(["", *lines], "f") == {(0, 1): orjson.loads(BROKEN),
                                                   (2, 5): b"plain text"}  # fmt: skip
    assert dlq.redrive_messages(letters, dlq.replacements(lines, "f")) == [
        ("tasks.requests", b"orig-key", BROKEN), ("tasks.requests", b"orig-key", b"plain text"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{oops", "f:1: not valid JSON"),
        ('{"partition": 0}', "f:1: needs integer 'partition' and 'offset'"),
        ('{"partition": 0, "offset": 1}', "f:1: needs 'value'"),
    ],
)
def test_malformed_replacement_lines_name_their_line(line: str, error: str) -> None:
    with pytest.raises(RedriveError, match=error):
        dlq.replacements([line], "f")


def test_preview_is_one_printable_line_cut_to_width() -> None:
    assert dlq.preview(b"short") == "short"
    assert dlq.preview(b"a\nb\x00") == "a\\nb\\x00"
    long = dlq.preview(b"x" * 500, 20)
    assert len(long) == 20 and long.endswith("…")


@pytest.mark.parametrize("width", [80, 110, 130, 200])
def test_the_letters_table_keeps_every_reason_whole_and_wraps_the_message_at_words(
    width: int,
) -> None:
    message = "expected a JSON object with a key and a command, got a list of seven numbers"
    letters = [
        StoredLetter(0, 12345, {**stored(0, 0, b"[1]").letter,
                                "error": {"code": "not_object", "message": message}}),
        stored(1, 7, BROKEN, ErrorCode.UNKNOWN_SCHEMA_VERSION),
    ]  # fmt: skip
    console = Console(width=width, record=True)
    console.print(_table(letters, "tasks.dlq", width))
    shown = console.export_text()
    assert max(len(line.rstrip()) for line in shown.splitlines()) <= width
    for reason in ("not_object", ErrorCode.UNKNOWN_SCHEMA_VERSION.value, "0:12345", "1:7"):
        assert reason in shown
    words = set(re.split(r"[\s│┃]+", shown))
    assert set(message.split()) <= words, "the message wraps between words, never inside one"
    assert ("original" in shown) is (width >= 120)
