"""A stage started while Kafka is unreachable: one line per retry, then up when Kafka is,
or one line and exit 1 at the start-up deadline. Never a traceback or an unclosed client."""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
import pytest

from pipeline.sandbox.broker import free_port, tansu_broker

pytestmark = pytest.mark.integration


async def start_router(bootstrap: str, startup_timeout_s: float) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")} | {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PIPELINE_RUNTIME_HTTP_PORT": "0",
        "PIPELINE_RUNTIME_LOG_FORMAT": "json",
        "PIPELINE_RUNTIME_STARTUP_TIMEOUT_S": str(startup_timeout_s),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "run", "router",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip


async def lines_until(process: asyncio.subprocess.Process, message: str) -> list[dict[str, str]]:
    """Log lines up to the first whose msg contains `message` (fails at the end of output)."""
    assert process.stdout is not None
    seen: list[dict[str, str]] = []
    while not seen or message not in seen[-1]["msg"]:
        raw = await process.stdout.readline()
        assert raw, f"output ended before {message!r}: {seen}"
        seen.append(orjson.loads(raw))
    return seen


async def test_it_gives_up_at_the_deadline_with_one_line() -> None:
    process = await start_router(f"127.0.0.1:{free_port()}", startup_timeout_s=2)
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 1
    lines = [orjson.loads(raw) for raw in output.splitlines()]
    retries = [line for line in lines if line["level"] == "warning"]
    errors = [line for line in lines if line["level"] == "error"]
    assert len(retries) >= 2
    assert all("cannot reach Kafka" in r["msg"] and "retrying in" in r["msg"] for r in retries)
    [gave_up] = errors
    assert "cannot reach Kafka" in gave_up["msg"] and "gave up after" in gave_up["msg"]
    assert not [line for line in lines if "exc" in line or "Unclosed" in line["msg"]]


async def test_it_comes_up_once_kafka_does() -> None:
    port = free_port()
    process = await start_router(f"127.0.0.1:{port}", startup_timeout_s=120)
    try:
        before = await asyncio.wait_for(lines_until(process, "retrying in"), 60)
        with tansu_broker(port):
            after = await asyncio.wait_for(lines_until(process, "routing"), 60)
            process.terminate()
            assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert not [line for line in before + after if line["level"] == "error"]
