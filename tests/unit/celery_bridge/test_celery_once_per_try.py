"""Once per try on the Celery path: the run record decides who runs a command, a run whose
worker died is reported (or rerun where configured), and a command dies with its worker."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from celery import Celery
from celery.exceptions import Ignore

from pipeline.celery_bridge import worker as worker_module
from pipeline.celery_bridge.ledger import RunRecord
from pipeline.celery_bridge.ledger_sql import SqlLedger
from pipeline.celery_bridge.states import observe
from pipeline.celery_bridge.worker import (
    LOST_GRACE_S,
    LOST_REASON,
    Outcome,
    claim_run,
    process_start,
    run_command,
    run_is_lost,
)
from pipeline.config import CelerySettings
from pipeline.messages import State
from tests.fixtures.polling import eventually

CELERY = CelerySettings()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def run(host: str, pid: int, age_s: float = 0.0) -> RunRecord:
    return {"host": host, "pid": pid, "started_at": time.time() - age_s}


@pytest.fixture
def ledger(tmp_path: Path) -> SqlLedger:
    app = Celery("t", backend=f"db+sqlite:///{tmp_path / 'results.sqlite'}")
    return SqlLedger(app.backend, ttl_s=600)


def test_the_first_delivery_claims_the_run_and_a_second_while_it_runs_is_dropped(
    ledger: SqlLedger,
) -> None:
    live_here = run(socket.gethostname(), os.getppid())
    assert ledger.begin_run("t1", live_here) is None
    with pytest.raises(Ignore):
        claim_run(ledger, "t1", CELERY)
    assert claim_run(ledger, "t2", CELERY) == "ran"


def test_a_run_whose_worker_process_is_gone_is_lost_and_taken_over(ledger: SqlLedger) -> None:
    ledger.begin_run("t1", run(socket.gethostname(), dead_pid()))
    assert claim_run(ledger, "t1", CELERY) == "lost"
    taken = ledger.begin_run("t1", run("z", 3))
    assert taken is not None and taken["pid"] == os.getpid()


def test_another_hosts_run_is_waited_for_until_no_command_could_still_run() -> None:
    now = time.time()
    assert run_is_lost(run("elsewhere", 1), CELERY, now) is None
    old = run("elsewhere", 1, age_s=CELERY.execution_timeout_s + LOST_GRACE_S + 1)
    assert run_is_lost(old, CELERY, now) is True
    assert run_is_lost(run(socket.gethostname(), os.getpid()), CELERY, now) is False


def test_a_run_whose_pid_now_belongs_to_a_later_process_is_lost() -> None:
    here, pid = socket.gethostname(), os.getpid()
    started = process_start(pid)
    assert started is not None
    now = time.time()
    assert run_is_lost({**run(here, pid), "pid_started": started}, CELERY, now) is False
    assert run_is_lost({**run(here, pid), "pid_started": started - 1}, CELERY, now) is True


def test_a_lost_run_reads_as_failed_with_its_reason_and_is_counted_as_lost() -> None:
    failed = observe({"status": "SUCCESS", "result": {**Outcome(None, LOST_REASON).to_result(),
                                                      "lost": True}})  # fmt: skip
    assert (failed.state, failed.reason, failed.lost) == (State.FAILED, LOST_REASON, True)
    rerun = observe({"status": "SUCCESS", "result": {**Outcome(0).to_result(), "lost": True}})
    assert (rerun.state, rerun.exit_code, rerun.lost) == (State.SUCCESS, 0, True)


def test_a_killed_command_reports_the_exit_code_a_container_would() -> None:
    env = {"PATH": os.environ["PATH"]}
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    assert run_command([sys.executable, "-c", code], env, 30) == Outcome(137, "killed by signal 9")


@pytest.mark.parametrize("signal_by", ["setpriv", "prctl"])
async def test_the_command_dies_with_the_worker_process_that_started_it(
    tmp_path: Path, signal_by: str
) -> None:
    """Its own session keeps it out of the worker's process group; the parent-death signal
    (set by `setpriv` where it can, else by `prctl` in the child) still takes it down, so a
    redelivered message never runs beside a survivor."""
    if signal_by == "setpriv" and worker_module._SETPRIV is None:
        pytest.skip("no setpriv with --pdeathsig here")
    pid_file = tmp_path / "pid"
    worker = textwrap.dedent(
        f"""
        import os, sys
        from pipeline.celery_bridge import worker
        if {signal_by!r} == "prctl":
            worker._SETPRIV = None
        child = [sys.executable, "-c",
                 "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                 "time.sleep(120)"]
        worker.run_command(child, {{"PATH": os.environ["PATH"]}}, 300)
        """
    )
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", worker)
    try:
        started = lambda: holds(pid_file.exists() and pid_file.read_text() != "")  # noqa: E731
        await eventually(started, timeout_s=120)
        command = int(pid_file.read_text())
        assert alive(command)
        os.kill(parent.pid, signal.SIGKILL)
        await parent.wait()
        await eventually(lambda: holds(not alive(command)), timeout_s=60)
    finally:
        if parent.returncode is None:
            parent.kill()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


async def holds(value: bool) -> bool:
    return value
