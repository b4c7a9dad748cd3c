"""The CLI against a real broker: submit, topics create, tail, and its error exits."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from pipeline import messages
from pipeline.config import Settings
from pipeline.kafka import make_producer, send_all, started
from pipeline.messages import ErrorCode, InvalidMessage, TaskKey
from tests.fixtures.kafka import read_all, read_records

pytestmark = pytest.mark.integration


async def pipeline_cli(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run the installed `pipeline` command as a user would; returns (code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_submit_from_flags_publishes_one_keyed_request(topics: Settings) -> None:
    code, _, err = await pipeline_cli(
        "submit", "--dag", "etl", "--task", "extract", "--run", "manual__1", "--try", "2",
        "--queue", "kubernetes", "--label", "team=data", "--env", "MODE=full",
        "--", "python", "-c", "print(1)",
    )  # fmt: skip
    assert code == 0, err
    [record] = await read_records(topics, topics.topic.requests, 1)
    request = messages.decode_request(record.value)
    key = TaskKey("etl", "extract", "manual__1", -1, 2)
    assert record.key == key.partition_key
    assert TaskKey.from_wire(request["key"]) == key
    assert request["command"] == ["python", "-c", "print(1)"]
    assert request["labels"] == {"team": "data"}
    assert request["env"] == {"MODE": "full"}


async def test_submit_ndjson_bulk_publishes_exactly_those_requests(
    topics: Settings, tmp_path: Path
) -> None:
    keys = [TaskKey("bulk", f"t{i}", "r1", i % 3 - 1, 1) for i in range(250)]
    lines = [
        orjson.dumps({"key": k.to_wire(), "command": ["echo", str(i)], "queue": "default"})
        for i, k in enumerate(keys)
    ]
    source = tmp_path / "requests.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = await pipeline_cli("submit", "--file", str(source))
    assert code == 0, err
    assert "published 250" in out
    records = await read_all(topics, topics.topic.requests)
    assert sorted(r.key for r in records) == sorted(k.partition_key for k in keys)
    by_key = {r.key: messages.decode_request(r.value) for r in records}
    assert all(by_key[k.partition_key]["key"] == k.to_wire() for k in keys)


async def test_submit_reads_ndjson_from_stdin(topics: Settings) -> None:
    line = orjson.dumps({"key": TaskKey("d", "t", "r").to_wire(), "command": ["x"], "queue": "q"})
    code, _, err = await pipeline_cli("submit", "--file", "-", stdin=line)
    assert code == 0, err
    [record] = await read_records(topics, topics.topic.requests, 1)
    assert record.key == TaskKey("d", "t", "r").partition_key


async def test_a_malformed_request_exits_2_with_one_line_and_publishes_nothing(
    topics: Settings, tmp_path: Path
) -> None:
    good = orjson.dumps({"key": TaskKey("d", "t", "r").to_wire(), "command": ["x"], "queue": "q"})
    bad = orjson.dumps({"key": TaskKey("d", "t", "r").to_wire(), "command": [], "queue": "q"})
    source = tmp_path / "requests.ndjson"
    source.write_bytes(good + b"\n" + bad + b"\n")
    code, _, err = await pipeline_cli("submit", "--file", str(source))
    assert code == 2
    assert err.count("\n") == 1 and f"{source}:2: invalid request: at /command" in err
    assert "Traceback" not in err
    assert await read_all(topics, topics.topic.requests) == []


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("submit", "--dag", "d", "--task", "t", "--", "echo"), "missing --run"),
        (
            ("submit", "--dag", "d", "--task", "t", "--run", "r", "--label", "x", "--", "e"),
            "--label",
        ),
        (
            ("submit", "--dag", "d", "--task", "t", "--run", "r", "--queue", "a b", "--", "e"),
            "/queue",
        ),
        (("--config", "/nonexistent.toml", "config", "show"), "does not exist"),
        (("run", "no-such-stage"), "unknown stage"),
    ],
)
async def test_bad_input_exits_2_with_one_clear_line(
    settings: Settings, args: tuple[str, ...], reason: str
) -> None:
    code, _, err = await pipeline_cli(*args)
    assert code == 2
    assert reason in err
    assert "Traceback" not in err


async def test_an_unreachable_broker_exits_2_and_says_where_it_looked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    code, _, err = await pipeline_cli(
        "submit", "--dag", "d", "--task", "t", "--run", "r", "--", "e"
    )
    assert code == 2
    assert err.strip() == (
        "error: cannot reach Kafka at 127.0.0.1:1 "
        "(is the broker running? set PIPELINE_KAFKA_BOOTSTRAP_SERVERS)"
    )


async def test_topics_create_is_idempotent(settings: Settings) -> None:
    code, first, err = await pipeline_cli("topics", "create")
    assert code == 0, err
    topic_count = len(settings.topic.all_names())
    assert first.count("created") == topic_count
    code, second, err = await pipeline_cli("topics", "create")
    assert code == 0, err
    assert "created" not in second and second.count("exists") == topic_count


async def test_topics_create_says_where_an_existing_topic_differs_from_the_settings(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = await pipeline_cli("topics", "create")
    assert code == 0, err
    monkeypatch.setenv("PIPELINE_TOPIC_LAUNCHES_RETENTION_S", "3600")  # a shorter ledger
    code, out, err = await pipeline_cli("topics", "create")
    assert code == 0, err
    lines = out.splitlines()
    at = lines.index(f"exists  {settings.topic.launches}")
    assert lines[at + 1].split() == ["retention.ms", "is", "680400000,", "wanted", "4050000"]
    assert len(lines) == len(settings.topic.all_names()) + 1, "no other topic differs"


async def test_tail_prints_matching_records_as_json(topics: Settings) -> None:
    for task in ("a", "b", "a"):
        code, _, err = await pipeline_cli(
            "submit", "--dag", "etl", "--task", task, "--run", "r", "--", "echo"
        )
        assert code == 0, err
    code, out, err = await pipeline_cli(
        "tail", "requests", "--from-beginning", "--key", "etl/a", "--json", "--idle-timeout", "3"
    )
    assert code == 0, err
    shown = [orjson.loads(line) for line in out.splitlines()]
    assert len(shown) == 2
    assert {s["value"]["key"]["task_id"] for s in shown} == {"a"}
    assert all(s["topic"] == topics.topic.requests for s in shown)


async def test_config_show_prints_the_effective_settings(settings: Settings) -> None:
    code, out, err = await pipeline_cli("config", "show", "--json")
    assert code == 0, err
    shown = orjson.loads(out)
    assert shown["kafka"]["bootstrap_servers"] == settings.kafka.bootstrap_servers
    assert shown["topic"]["requests"] == settings.topic.requests


async def test_tail_says_it_waits_for_new_messages_and_reads_dead_letters_out(
    topics: Settings,
) -> None:
    invalid = InvalidMessage(ErrorCode.NOT_JSON, "not JSON")
    letter = messages.make_dead_letter(
        b"{oops",
        b"k",
        invalid,
        topic=topics.topic.requests,
        partition=0,
        offset=3,
        timestamp=None,
        stage="router",
    )
    producer = make_producer(topics.kafka, "test")
    async with started(producer, topics.kafka):
        await send_all(producer, [(topics.topic.dlq, b"k", messages.encode(letter))])

    code, out, err = await pipeline_cli("tail", "dlq", "--json", "--idle-timeout", "2")
    assert (code, out) == (0, "")
    assert f"waiting for new messages on {topics.topic.dlq} (1 already there" in err
    code, out, err = await pipeline_cli(
        "tail", "dlq", "--from-beginning", "--json", "--idle-timeout", "3"
    )
    assert code == 0, err
    [shown] = [orjson.loads(line) for line in out.splitlines()]
    assert shown["value"]["original"] == letter["original"], "the wire field as it is"
    assert shown["value"]["original_text"] == "{oops"
