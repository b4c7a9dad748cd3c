"""`pipeline dlq list|redrive` on a real broker, with the router turning letters back into work."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from pipeline import messages
from pipeline.config import Settings, load_settings
from pipeline.messages import ErrorCode, InvalidMessage, TaskKey
from tests.fixtures.kafka import read_all, read_records
from tests.fixtures.router import publish, request, router_running

pytestmark = pytest.mark.integration


async def pipeline_cli(*args: str) -> tuple[int, str, str]:
    """Run the `pipeline` command as a user would; returns (code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", *args, env=dict(os.environ, COLUMNS="200"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_redrive_round_trips_fixed_messages(
    router_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = router_env
    unrouted = request(TaskKey("dlq", "a", "r"), "batch")
    broken = request(TaskKey("dlq", "b", "r"), "default", command=[])
    await publish(s, [unrouted, broken])
    async with router_running(s):
        await read_records(s, s.topic.dlq, 2)

    # the operator adds the missing route; the producer's exact bytes go back as they were
    monkeypatch.setenv("PIPELINE_ROUTER_ROUTES", '{"batch": "celery", "default": "celery"}')
    code, out, err = await pipeline_cli("dlq", "redrive", "--reason", "no_route")
    assert code == 0, err
    assert f"re-published 1 dead letter(s): 1 to {s.topic.requests}" in out

    # the broken one is fixed by hand: list as JSON, edit the value, re-drive the file
    code, out, err = await pipeline_cli("dlq", "list", "--reason", "schema", "--json")
    assert code == 0, err
    [line] = [orjson.loads(x) for x in out.splitlines()]
    line["value"]["command"] = ["echo", "fixed"]
    fix = tmp_path / "fix.ndjson"
    fix.write_bytes(orjson.dumps(line) + b"\n")
    code, out, err = await pipeline_cli("dlq", "redrive", "--replace", str(fix))
    assert code == 0, err
    assert "re-published 1 dead letter(s) (1 replaced)" in out

    requests = await read_all(s, s.topic.requests)
    assert sorted((r.key, r.value) for r in requests).count(unrouted) == 2
    async with router_running(load_settings()):
        routed = await read_records(s, s.topic.celery, 2)
    by_task = {messages.decode_request(r.value)["key"]["task_id"]: r for r in routed}
    assert messages.decode_request(by_task["b"].value)["command"] == ["echo", "fixed"]
    assert by_task["a"].key == unrouted[0]
    assert len(await read_all(s, s.topic.dlq)) == 2  # nothing failed again


async def _letters(s: Settings, count: int) -> None:
    records: list[tuple[bytes | None, bytes]] = []
    for i in range(count):
        raw = b"garbage\n#%d" % i
        error = InvalidMessage(ErrorCode.NOT_JSON, "not valid JSON: unexpected character")
        letter = messages.make_dead_letter(
            raw, b"k%d" % i, error, topic=s.topic.requests, partition=0, offset=i,
            timestamp=None, stage="router",
        )  # fmt: skip
        records.append((b"k%d" % i, messages.encode(letter)))
    await publish(s, records, topic=s.topic.dlq)


async def test_list_shows_letters_and_a_dry_run_publishes_nothing(topics: Settings) -> None:
    s = topics
    await _letters(s, 3)
    code, out, err = await pipeline_cli("dlq", "list", "--max", "2")
    assert code == 0, err
    assert "3 dead letter(s)" in out and "1 more not shown" in out
    assert out.count("not_json") == 2 and "garbage\\n#" in out
    assert f"{s.topic.requests} 0:" in out

    code, out, err = await pipeline_cli("dlq", "redrive", "--all", "--dry-run")
    assert code == 0, err
    assert f"dry run: would re-publish 3 dead letter(s): 3 to {s.topic.requests}" in out
    assert await read_all(s, s.topic.requests) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "select letters with"),
        (("--from-offset", "5", "--to-offset", "1"), "--from-offset 5 is after --to-offset 1"),
        (("--reason", "bogus"), "unknown reason 'bogus'"),
        (("--partition", "99"), "has no partition 99"),
    ],
)
async def test_bad_redrive_input_exits_2_with_one_line(
    topics: Settings, args: tuple[str, ...], message: str
) -> None:
    code, _, err = await pipeline_cli("dlq", "redrive", *args)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
