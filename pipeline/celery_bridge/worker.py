"""The worker side: one Celery task that runs a request's argv, safely, and reports the outcome.

The command runs without a shell, only if the allowlist permits it, in a clean environment
(PATH and a few harmless variables, then configured and per-request variables), in its own
process group so a timeout or a cancel (a revoke with terminate: SIGTERM to the pool
process) kills everything it started. Its stdout and stderr are captured (bounded, secrets
masked): live in the result backend while it runs, then in the completion record. A task
whose dispatch record says `cancelled` is never run. The result is a small dict the
monitor turns into a TaskEvent; failures of the command are results, not Celery exceptions,
so the exit code always travels with them.

Once per try: a command starts only in the worker process that claimed its run record, and
dies with that process (a parent-death signal), so a redelivered message never runs a command
that is still running or already finished. A redelivery that finds the run record of a worker
that died (same host and that process gone, or older than any command may run) reports the
try failed with `LOST_REASON`, or runs the command again where `celery.rerun_lost_commands`
says so; the result says `lost` either way, so the monitor counts it.

`celery -A pipeline.celery_bridge.worker worker -Q QUEUES` also works: the module exposes
`app` built from the environment's settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from celery import Celery, Task
from celery.exceptions import Ignore

from pipeline import logs
from pipeline.celery_bridge.app import TASK_NAME, make_app, make_ledger
from pipeline.celery_bridge.capture import Capture, Store
from pipeline.celery_bridge.ledger import DispatchRecord, Ledger, RunRecord
from pipeline.config import CelerySettings, Settings, load_settings
from pipeline.messages import CancelInfo, TaskKey, cancelled_reason, utc_now
from pipeline.security import command_violation
from pipeline.tasklogs import secrets_of

log = logging.getLogger(__name__)

INHERITED_ENV: Final = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "TMPDIR")
"""Harmless variables a command gets from the worker's own environment."""

PROTECTED_ENV: Final = re.compile(r"^(PATH|LD_\w*|DYLD_\w*|PYTHON(PATH|HOME|STARTUP))$")
"""Variables a request may not set: they would change which program the allowlist admitted."""

LOST_REASON: Final = "worker lost while the command ran"
LOST_GRACE_S: Final = 60.0
"""How long past `execution_timeout_s` a run record of another host's worker stays live."""
LOST_RECHECK_S: Final = 30.0
_PR_SET_PDEATHSIG: Final = 1


class RunElsewhere(Exception):
    """The command may be running in a worker on another host: this delivery waits."""


class Terminated(BaseException):
    """SIGTERM reached the process running the command: a revoke with terminate (a cancel)."""

    output: tuple[str, int] = ("", 0)  # what the command printed before it was killed


@dataclass(frozen=True)
class Outcome:
    """How one command ended: `exit_code` when it exited, `reason` when it failed."""

    exit_code: int | None
    reason: str | None = None
    cancel: CancelInfo | None = None
    output: str = field(default="", compare=False, repr=False)  # captured, masked, bounded
    truncated: int = field(default=0, compare=False, repr=False)  # older output bytes dropped

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.reason is None and self.cancel is None

    def to_result(self) -> dict[str, Any]:
        """What Celery stores as the result (the output goes to the completion record)."""
        result = {"ok": self.ok, **asdict(self)}
        del result["output"], result["truncated"]
        if self.cancel is None:
            del result["cancel"]
        return result


def command_env(request_env: Mapping[str, str], celery: CelerySettings) -> dict[str, str]:
    """The command's whole environment: PATH, inherited safe variables, configured, requested."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env["PATH"] = celery.command_path or os.environ.get("PATH", os.defpath)
    return {**env, **celery.command_env, **request_env}


def env_violation(request_env: Mapping[str, str]) -> str | None:
    protected = sorted(name for name in request_env if PROTECTED_ENV.match(name))
    return f"environment not allowed: {', '.join(protected)}" if protected else None


def run_command(
    argv: Sequence[str], env: Mapping[str, str], timeout_s: float, capture: Capture | None = None
) -> Outcome:
    """Run argv (no shell) in its own process group; on timeout, or when the worker process
    is terminated (a revoke), kill the whole group. Output goes to `capture` when given."""
    executable = shutil.which(argv[0], path=env.get("PATH"))
    if executable is None:
        return Outcome(None, f"command not found: {argv[0]!r}")
    read_fd, write_fd = os.pipe() if capture is not None else (-1, -1)
    output = write_fd if capture is not None else None
    args, preexec = [executable, *argv[1:]], None
    if _SETPRIV is not None:  # it sets the signal, then execs the command
        args = [_SETPRIV, "--pdeathsig", "KILL", "--", *args]
    elif _PRCTL is not None:
        preexec = _die_with_parent
    try:
        process = subprocess.Popen(
            args,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if capture is not None else None,
            start_new_session=True,
            preexec_fn=preexec,
        )
    finally:
        if capture is not None:
            os.close(write_fd)  # the child holds its own copy
    if capture is not None:
        capture.read_from(read_fd)
    try:
        code = process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        process.wait()
        return Outcome(None, f"timeout after {timeout_s:g}s")
    except BaseException:  # terminated, or the worker is going down: take the command with it
        _kill_group(process.pid)
        process.wait()
        raise
    if code < 0:  # as a container runtime reports it, so both executors say the same
        return Outcome(128 - code, f"killed by signal {-code}")
    return Outcome(code, None if code == 0 else f"exit code {code}")


def _load_prctl() -> Any:
    """libc's prctl, resolved once in the worker: the child between fork and exec must not
    load a library (another thread may hold the loader's lock at the fork)."""
    if sys.platform != "linux":
        return None
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl
    return None


_PRCTL: Final = _load_prctl()


def _find_setpriv() -> str | None:
    """util-linux's `setpriv`, where it can set a parent-death signal (2.33 and later).

    A child that runs Python code between fork and exec (`preexec_fn`) must be a full fork:
    the worker's page tables are copied, ~6 ms of CPU per command at 120 MB of worker and more
    with a larger one. `setpriv --pdeathsig KILL` does the same `prctl` after the exec, so
    the command starts by vfork (~1.3 ms, measured spawning `true`).
    """
    if sys.platform != "linux" or (path := shutil.which("setpriv")) is None:
        return None
    probe = [path, "--pdeathsig", "KILL", "--", path, "--version"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0:
            return path
    return None


_SETPRIV: Final = _find_setpriv()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the worker process that started it dies, since
    its own session keeps it out of reach of a signal to the worker's process group."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def refusal(payload: Mapping[str, Any], settings: Settings) -> str | None:
    """Why policy refuses the request's command or environment, or None."""
    return command_violation(payload["command"], settings.security.allowed_commands) or (
        env_violation(payload.get("env") or {})
    )


def execute(payload: Mapping[str, Any], settings: Settings, store: Store | None = None) -> Outcome:
    """Check the request against policy, then run it; a refused command never starts."""
    argv: list[str] = payload["command"]
    request_env: dict[str, str] = payload.get("env") or {}
    if refused := refusal(payload, settings):
        return Outcome(None, refused)
    env = command_env(request_env, settings.celery)
    capture = Capture(settings.logs.max_bytes, secrets_of(env), store)
    try:
        outcome = run_command(argv, env, settings.celery.execution_timeout_s, capture)
    except Terminated as exc:
        capture.finish()
        exc.output = capture.text()
        raise
    capture.finish()
    output, truncated = capture.text()
    return replace(outcome, output=output, truncated=truncated)


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """While a command runs, SIGTERM (Celery's revoke with terminate) raises `Terminated`
    in the task, so the command's group is killed and the cancel is recorded."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a thread pool cannot take signals; its revoke only skips queued tasks
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_once(
    task_id: str, payload: Mapping[str, Any], ledger: Ledger, settings: Settings
) -> dict[str, Any]:
    """Run a delivered task unless it finished or was cancelled; record how it ended (with
    its output) in the completion record, and return the result without the output."""
    if (done := ledger.completed(task_id)) is not None:
        log.info("duplicate delivery of a finished task; not running it again")
        return {k: v for k, v in done.items() if k not in ("log", "log_truncated")}
    lost = False
    if refused := refusal(payload, settings):  # before any other round trip: never started
        outcome = Outcome(None, refused)
    elif (record := ledger.dispatch(task_id)) is not None and _is_cancelled(record):
        log.info("task was cancelled before it started; not running it")
        outcome = Outcome(None, cancelled_reason(record["cancel"]), record["cancel"])
    elif (claimed := claim_run(ledger, task_id, settings.celery)) == "wait":
        raise RunElsewhere()
    elif (lost := claimed == "lost") and not settings.celery.rerun_lost_commands:
        log.warning("%s; failing the try", LOST_REASON)
        outcome = Outcome(None, LOST_REASON)
    else:
        try:
            with terminate_raises():
                outcome = execute(payload, settings, lambda data: ledger.keep_output(task_id, data))
        except Terminated as exc:
            cancel = _cancel_of(ledger.dispatch(task_id))
            output, truncated = exc.output
            outcome = Outcome(None, cancelled_reason(cancel), cancel, output, truncated)
            log.info("command terminated by a revoke")
    log.info("command finished", extra={"exit_code": outcome.exit_code})
    result = {**outcome.to_result(), **({"lost": True} if lost else {})}
    ledger.complete(task_id, {**result, "log": outcome.output, "log_truncated": outcome.truncated})
    return result


def _is_cancelled(record: DispatchRecord) -> bool:
    return record["status"] == "cancelled" and "cancel" in record


def _cancel_of(record: DispatchRecord | None) -> CancelInfo:
    if record is not None and "cancel" in record:
        return record["cancel"]
    return {"reason": "revoked", "requested_by": "celery", "requested_at": utc_now()}


def register(app: Celery, settings: Settings) -> Task[Any, Any]:
    """Register the run-command task on `app`, bound to `settings`' policy."""
    ledger = make_ledger(app, settings.celery)

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, track_started=True
    )
    def run_task(task: Task[Any, Any], payload: dict[str, Any]) -> dict[str, Any]:
        task_id: str = task.request.id
        with logs.bound(task=str(TaskKey.from_wire(payload["key"])), celery_task_id=task_id):
            try:
                return run_once(task_id, payload, ledger, settings)
            except RunElsewhere:  # another host's run: ask again until it ends or is lost
                raise task.retry(countdown=LOST_RECHECK_S, max_retries=None) from None

    registered: Task[Any, Any] = run_task
    return registered


def this_run() -> RunRecord:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "started_at": time.time(),
        "pid_started": process_start(pid),
    }


def process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot; None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name, in parentheses, may hold spaces: the fields that follow it are plain
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22 of proc(5), the 20th after the name


def run_is_lost(run: RunRecord, celery: CelerySettings, now: float) -> bool | None:
    """Whether the worker process that claimed `run` is gone: known on its own host (is the
    process there?), elsewhere only once it is older than any command may run (else None)."""
    if run["host"] == socket.gethostname():
        try:
            os.kill(run["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        recorded = run.get("pid_started")
        return recorded is not None and process_start(run["pid"]) not in (None, recorded)
    if now - run["started_at"] > celery.execution_timeout_s + LOST_GRACE_S:
        return True
    return None


Claim = Literal["ran", "lost", "wait"]


def claim_run(ledger: Ledger, task_id: str, celery: CelerySettings) -> Claim:
    """Claim the command's run: `ran` when this delivery may run it, `lost` when an earlier
    run's worker died (the claim is then taken over), `wait` when that cannot be known yet.

    A run whose worker lives on this host is left alone: this delivery is dropped (`Ignore`)
    and that worker's result stands; its own message, unacknowledged, comes back if it dies.
    """
    mine = this_run()
    existing = ledger.begin_run(task_id, mine)
    if existing is None:
        return "ran"
    lost = run_is_lost(existing, celery, time.time())
    if lost is None:
        return "wait"
    if not lost:
        log.info("the command is running in another worker; this delivery is dropped")
        raise Ignore()
    ledger.replace_run(task_id, mine)
    return "lost"


def worker_app(settings: Settings) -> Celery:
    """The app a worker process runs: settings' broker and backend plus the task."""
    app = make_app(settings.celery)
    register(app, settings)
    return app


def __getattr__(name: str) -> Any:
    """`app` for `celery -A pipeline.celery_bridge.worker`, built on first access only."""
    if name == "app":
        app = globals()["app"] = worker_app(load_settings())
        return app
    raise AttributeError(name)
