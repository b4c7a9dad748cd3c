"""The worker's command execution: policy before anything runs, clean env, exit codes, timeout."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from pipeline.celery_bridge.worker import Outcome, command_env, env_violation, execute, run_command
from pipeline.config import CelerySettings, Settings

PYTHON_DIR = str(Path(sys.executable).parent)


def policy(**celery: object) -> Settings:
    return Settings(
        celery=CelerySettings(command_path=f"{PYTHON_DIR}:/usr/bin:/bin", **celery),  # type: ignore[arg-type]
        security={"allowed_commands": [["python"]]},  # type: ignore[arg-type]
    )


def payload(command: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    return {"key": {}, "command": command, "env": env or {}}


def test_exit_codes_are_reported() -> None:
    assert execute(payload(["python", "-c", "pass"]), policy()) == Outcome(0)
    assert execute(payload(["python", "-c", "raise SystemExit(3)"]), policy()) == Outcome(
        3, "exit code 3"
    )
    assert Outcome(0).ok and not Outcome(3, "exit code 3").ok


def test_a_command_outside_the_allowlist_never_starts(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    outcome = execute(payload(["touch", str(marker)]), policy())
    assert outcome.exit_code is None
    assert "not allowed" in (outcome.reason or "")
    assert not marker.exists()


def test_a_request_may_not_redirect_the_allowed_program(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    code = f"open({str(marker)!r}, 'w')"
    outcome = execute(payload(["python", "-c", code], {"PATH": str(tmp_path)}), policy())
    assert outcome.reason == "environment not allowed: PATH"
    assert not marker.exists()
    assert env_violation({"LD_PRELOAD": "x", "PYTHONPATH": "y", "GREETING": "hi"}) == (
        "environment not allowed: LD_PRELOAD, PYTHONPATH"
    )


def test_the_command_sees_a_clean_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_SECRET", "s3cret")
    out = tmp_path / "env"
    code = f"import os, json; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    settings = policy(command_env={"FROM_SETTINGS": "1"})
    assert execute(payload(["python", "-c", code], {"FROM_REQUEST": "2"}), settings).ok
    seen = __import__("json").loads(out.read_text())
    assert "WORKER_SECRET" not in seen
    assert seen["FROM_SETTINGS"] == "1" and seen["FROM_REQUEST"] == "2"
    assert seen["PATH"].startswith(PYTHON_DIR)


def test_request_env_wins_over_configured_env() -> None:
    env = command_env({"A": "request"}, CelerySettings(command_env={"A": "config", "B": "x"}))
    assert (env["A"], env["B"]) == ("request", "x")


def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    child_pid = tmp_path / "child"
    code = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(child_pid)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    outcome = run_command(["python", "-c", code], {"PATH": PYTHON_DIR}, timeout_s=3.0)
    assert outcome == Outcome(None, "timeout after 3s")
    assert _ends(int(child_pid.read_text())), "the grandchild was killed too"


def _ends(pid: int, within_s: float = 10.0) -> bool:
    """Whether `pid` is gone or a zombie within the deadline (SIGKILL lands asynchronously)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_an_unknown_program_is_a_failure_not_a_crash() -> None:
    assert run_command(["no-such-program-xyz"], {"PATH": "/nonexistent"}, 1.0) == Outcome(
        None, "command not found: 'no-such-program-xyz'"
    )
