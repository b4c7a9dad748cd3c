"""The worker side: one Celery task that runs a request's argv, safely, and reports the outcome.

The command runs without a shell, only if the allowlist permits it, in a clean environment
(PATH and a few harmless variables, then configured and per-request variables), in its own
process group so a timeout kills everything it started. The result is a small dict the
monitor turns into a TaskEvent; failures of the command are results, not Celery exceptions,
so the exit code always travels with them.

`celery -A pipeline.celery_bridge.worker worker -Q QUEUES` also works: the module exposes
`app` built from the environment's settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from celery import Celery, Task

from pipeline import logs
from pipeline.celery_bridge.app import TASK_NAME, make_app, make_ledger
from pipeline.config import CelerySettings, Settings, load_settings
from pipeline.messages import TaskKey
from pipeline.security import command_violation

log = logging.getLogger(__name__)

INHERITED_ENV: Final = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "TMPDIR")
"""Harmless variables a command gets from the worker's own environment."""

PROTECTED_ENV: Final = re.compile(r"^(PATH|LD_\w*|DYLD_\w*|PYTHON(PATH|HOME|STARTUP))$")
"""Variables a request may not set: they would change which program the allowlist admitted."""


@dataclass(frozen=True)
class Outcome:
    """How one command ended: `exit_code` when it exited, `reason` when it failed."""

    exit_code: int | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.reason is None

    def to_result(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def command_env(request_env: Mapping[str, str], celery: CelerySettings) -> dict[str, str]:
    """The command's whole environment: PATH, inherited safe variables, configured, requested."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env["PATH"] = celery.command_path or os.environ.get("PATH", os.defpath)
    return {**env, **celery.command_env, **request_env}


def env_violation(request_env: Mapping[str, str]) -> str | None:
    protected = sorted(name for name in request_env if PROTECTED_ENV.match(name))
    return f"environment not allowed: {', '.join(protected)}" if protected else None


def run_command(argv: Sequence[str], env: Mapping[str, str], timeout_s: float) -> Outcome:
    """Run argv (no shell) in its own process group; on timeout kill the whole group."""
    executable = shutil.which(argv[0], path=env.get("PATH"))
    if executable is None:
        return Outcome(None, f"command not found: {argv[0]!r}")
    process = subprocess.Popen(
        list(argv),
        executable=executable,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        code = process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        process.wait()
        return Outcome(None, f"timeout after {timeout_s:g}s")
    except BaseException:  # the worker is going down: take the command with it
        _kill_group(process.pid)
        raise
    if code < 0:
        return Outcome(code, f"killed by signal {-code}")
    return Outcome(code, None if code == 0 else f"exit code {code}")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def execute(payload: Mapping[str, Any], settings: Settings) -> Outcome:
    """Check the request against policy, then run it; a refused command never starts."""
    argv: list[str] = payload["command"]
    request_env: dict[str, str] = payload.get("env") or {}
    refused = command_violation(argv, settings.security.allowed_commands) or env_violation(
        request_env
    )
    if refused:
        return Outcome(None, refused)
    env = command_env(request_env, settings.celery)
    return run_command(argv, env, settings.celery.execution_timeout_s)


def register(app: Celery, settings: Settings) -> Task[Any, Any]:
    """Register the run-command task on `app`, bound to `settings`' policy."""
    ledger = make_ledger(app, settings.celery)

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, track_started=True
    )
    def run_task(task: Task[Any, Any], payload: dict[str, Any]) -> dict[str, Any]:
        task_id: str = task.request.id
        with logs.bound(task=str(TaskKey.from_wire(payload["key"])), celery_task_id=task_id):
            if (done := ledger.completed(task_id)) is not None:
                log.info("duplicate delivery of a finished task; not running it again")
                return done
            outcome = execute(payload, settings)
            log.info("command finished", extra={"exit_code": outcome.exit_code})
            result = outcome.to_result()
            ledger.complete(task_id, result)
            return result

    registered: Task[Any, Any] = run_task
    return registered


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
