"""`pipeline dev`, the README's first command, as a user runs it."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import orjson
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


def argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def is_reducer(pid: int) -> bool:
    """`pipeline run reducer`, or the title faust gives its worker where setproctitle is
    installed (the airflow extra brings it)."""
    command = argv(pid)
    return command[-2:] == ["run", "reducer"] or (
        bool(command) and command[0].startswith("[Faust:Worker]")
    )


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
        sys.executable, "-m", "pipeline", "dev", "--work-dir", str(work_dir), "--random-ports",
        *args,
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
    followed = re.search(r"following (\d+) tasks", text)
    assert followed is not None, text
    tasks = sum(int(expected) for executor, _, _, expected in rows if executor != "dlq")
    assert int(followed[1]) == tasks, "the count followed is the tasks the summary expects"
    mismatched = [row for row in rows if row[2] != row[3]]
    assert not mismatched, f"tasks vs expected differ: {mismatched}\n{text}"
    with redis.Redis.from_url(celery_url) as client:
        assert client.dbsize() > 0, "Celery ran on the Redis it was given"


def exported(path: Path) -> dict[str, str]:
    """The variables of an `export NAME=VALUE` file, as a shell would read them."""
    pairs = (shlex.split(line.removeprefix("export "))[0] for line in path.read_text().splitlines())
    return dict(pair.split("=", 1) for pair in pairs)


async def test_a_second_terminal_uses_the_exports_a_dead_stage_comes_back_and_ctrl_c_ends_all(
    tmp_path: Path,
) -> None:
    process = await start_dev(work_dir=tmp_path)  # and Celery on the server-less transport
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(180):
        while not lines or "ready; Ctrl-C stops everything" not in lines[-1]:
            line = (await process.stdout.readline()).decode()
            assert line, "".join(lines)  # end of output: dev exited
            lines.append(line)
    [source] = [line.split("source ", 1)[1].strip() for line in lines if "source " in line]
    env_file = Path(source)
    assert env_file == tmp_path / "dev.env"
    assert os.stat(env_file).st_mode & 0o077 == 0, "only the owner reads it"
    exports = exported(env_file)
    assert {f"  export {k}={shlex.quote(v)}\n" for k, v in exports.items()} <= set(lines)
    second_terminal = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "status", "--json",
        env=second_terminal | exports, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    answer, _ = await asyncio.wait_for(status.communicate(), 60)
    assert status.returncode == 0, answer
    assert orjson.loads(answer)["tasks"] == [], "reached this sandbox's (empty) state API"

    [reducer] = [pid for pid in descendants(process.pid) if is_reducer(pid)]
    os.kill(reducer, signal.SIGKILL)
    async with asyncio.timeout(180):
        while "reducer restarted and ready" not in lines[-1]:
            line = (await process.stdout.readline()).decode()
            assert line, "".join(lines)
            lines.append(line)
    assert any(f"reducer exited with code {-signal.SIGKILL}" in line for line in lines)
    [back] = [pid for pid in descendants(process.pid) if is_reducer(pid)]
    assert back != reducer

    started = descendants(process.pid)
    assert len(started) >= 8, "broker, worker and six stages"
    assert (tmp_path / "celery-broker").is_dir(), "no Redis answered: the filesystem transport"
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert not [pid for pid in started if alive(pid)]
