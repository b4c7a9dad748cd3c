"""`pipeline dev`, the README's first command, as a user runs it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import redis

from pipeline.sandbox.broker import free_port
from tests.fixtures.redis import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SUMMARY_ROW = re.compile(r"^\W*(\w+)\W+([\w ]+?)\W+(\d+)\W+(\d+)\W*$")


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, found through /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def start_dev(
    *args: str, work_dir: Path, celery_url: str | None = None
) -> asyncio.subprocess.Process:
    """`pipeline dev` with no PIPELINE_ settings but the Celery broker: the test's own Redis,
    or (None) one where nothing answers, which is a machine without Redis."""
    celery_url = celery_url or f"redis://127.0.0.1:{free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env |= {"PIPELINE_CELERY_BROKER_URL": celery_url, "PIPELINE_CELERY_RESULT_BACKEND": celery_url}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "dev", "--work-dir", str(work_dir), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip


async def test_demo_runs_every_task_to_its_expected_end(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    celery_url = redis_server.url(redis_server.new_db())
    process = await start_dev("--demo", "40", work_dir=tmp_path, celery_url=celery_url)
    output, _ = await asyncio.wait_for(process.communicate(), 240)
    text = output.decode()
    assert process.returncode == 0, text
    rows = [m.groups() for line in text.splitlines() if (m := SUMMARY_ROW.match(line))]
    assert {(executor, state) for executor, state, _, _ in rows} >= {
        ("kubernetes", "success"), ("kubernetes", "failed"),
        ("celery", "success"), ("celery", "failed"), ("dlq", "invalid messages"),
    }  # fmt: skip
    mismatched = [row for row in rows if row[2] != row[3]]
    assert not mismatched, f"tasks vs expected differ: {mismatched}\n{text}"
    with redis.Redis.from_url(celery_url) as client:
        assert client.dbsize() > 0, "Celery ran on the Redis it was given"


async def test_ctrl_c_stops_everything_and_leaves_no_process(tmp_path: Path) -> None:
    process = await start_dev(work_dir=tmp_path)  # and Celery on the server-less transport
    assert process.stdout is not None
    async with asyncio.timeout(180):
        while b"ready; Ctrl-C stops everything" not in await process.stdout.readline():
            assert process.returncode is None
    started = descendants(process.pid)
    assert len(started) >= 8, "broker, worker and six stages"
    assert (tmp_path / "celery-broker").is_dir(), "no Redis answered: the filesystem transport"
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert not [pid for pid in started if alive(pid)]
