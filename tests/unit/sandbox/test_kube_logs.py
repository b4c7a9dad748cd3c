"""Container log records: windows by tail, time, byte limit; timestamps; follow; previous."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipeline.sandbox.kube.logs import (
    PARTIAL_LIMIT,
    ContainerLogs,
    LogBuffer,
    LogWindow,
    rfc3339_nano,
)
from pipeline.sandbox.kube.podlog import log_window
from pipeline.sandbox.kube.status import ApiError


def buffer_with(*chunks: bytes) -> LogBuffer:
    buffer = LogBuffer()
    for chunk in chunks:
        buffer.append(chunk)
    return buffer


def test_a_line_written_in_pieces_is_one_record() -> None:
    buffer = buffer_with(b"one\ntwo\n", b"thr", b"ee\n")
    assert buffer.read(LogWindow()) == b"one\ntwo\nthree\n"
    assert buffer.read(LogWindow(tail_lines=1)) == b"three\n"
    assert buffer.read(LogWindow(tail_lines=0)) == b""
    stamped = buffer.read(LogWindow(timestamps=True)).splitlines()
    assert [line.split(b" ", 1)[1] for line in stamped] == [b"one", b"two", b"three"]


def test_only_a_newline_ends_a_line() -> None:
    buffer = buffer_with(b"10%\r20%\rdone\n")
    assert buffer.read(LogWindow(tail_lines=1)) == b"10%\r20%\rdone\n"


def test_an_unfinished_line_shows_once_it_is_long_or_the_container_ended() -> None:
    buffer = buffer_with(b"prompt> ")
    assert buffer.read(LogWindow()) == b""
    buffer.append(b"x" * PARTIAL_LIMIT)
    assert buffer.read(LogWindow()) == b"prompt> " + b"x" * (PARTIAL_LIMIT - len(b"prompt> "))
    buffer.close()
    assert buffer.read(LogWindow(tail_lines=1)) == b"x" * len(b"prompt> ")


def test_since_drops_older_records() -> None:
    buffer = buffer_with(b"old\n")
    cut = time.time_ns() + 1
    while time.time_ns() <= cut:
        pass
    buffer.append(b"new\n")
    assert buffer.read(LogWindow(since_ns=cut)) == b"new\n"


def test_timestamps_prefix_each_record_and_limit_cuts_bytes() -> None:
    buffer = buffer_with(b"a\nb\n")
    stamped = buffer.read(LogWindow(timestamps=True)).decode().splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["a", "b"]
    assert buffer.read(LogWindow(limit_bytes=3)) == b"a\nb"


def test_rfc3339_nano_trims_trailing_zeros() -> None:
    assert rfc3339_nano(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert rfc3339_nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def test_the_oldest_records_go_past_the_limit() -> None:
    buffer = LogBuffer(limit=8)
    buffer.append(b"1234\n5678\nabc\n")
    assert buffer.read(LogWindow()) == b"abc\n"


async def test_follow_yields_new_records_until_closed() -> None:
    buffer = buffer_with(b"first\n")
    seen: list[bytes] = []

    async def follow() -> None:
        async for chunk in buffer.follow(LogWindow()):
            seen.append(chunk)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    buffer.append(b"second\n")
    buffer.close()
    await asyncio.wait_for(task, 5)
    assert b"".join(seen) == b"first\nsecond\n"


async def test_follow_stops_at_the_byte_limit() -> None:
    buffer = buffer_with(b"abcdef\n")
    chunks = [c async for c in buffer.follow(LogWindow(limit_bytes=3))]
    assert chunks == [b"abc"]


def test_previous_is_the_run_that_exited() -> None:
    logs = ContainerLogs()
    logs.current.append(b"run 1\n")
    logs.exited()
    assert logs.previous is not None and logs.previous.closed
    logs.restart().append(b"run 2\n")
    assert logs.previous.read(LogWindow()) == b"run 1\n"
    assert logs.current.read(LogWindow()) == b"run 2\n"


@pytest.mark.parametrize(
    "params",
    [
        {"tailLines": "-1"},
        {"sinceSeconds": "0"},
        {"limitBytes": "0"},
        {"sinceSeconds": "5", "sinceTime": "2024-01-01T00:00:00Z"},
        {"sinceTime": "yesterday"},
    ],
)
def test_invalid_log_options_are_400(params: dict[str, str]) -> None:
    with pytest.raises(ApiError) as raised:
        log_window(params)
    assert raised.value.code == 400


def test_since_time_and_flags_parse() -> None:
    window = log_window({"sinceTime": "2024-01-01T00:00:00Z", "timestamps": "True"})
    assert window.since_ns == 1_704_067_200 * 1_000_000_000
    assert window.timestamps is True
