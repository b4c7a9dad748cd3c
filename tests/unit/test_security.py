"""The command allowlist matches whole argv elements only."""

from __future__ import annotations

import pytest

from pipeline.security import command_violation

ALLOWED = [["airflow", "tasks", "run"], ["python", "-m", "job"]]


@pytest.mark.parametrize(
    "argv",
    [
        ["airflow", "tasks", "run", "d", "t", "r"],
        ["python", "-m", "job"],
        ["python", "-m", "job", "x"],
    ],
)
def test_allowed_prefixes_pass(argv: list[str]) -> None:
    assert command_violation(argv, ALLOWED) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["airflow", "tasks", "runner"],
        ["airflow tasks run"],
        ["airflow", "tasks"],
        ["sh", "-c", "airflow tasks run"],
        ["python", "-c", "import os"],
        [],
    ],
)
def test_anything_else_is_refused_with_a_reason(argv: list[str]) -> None:
    reason = command_violation(argv, ALLOWED)
    assert reason is not None
    assert "command" in reason


def test_an_empty_allowlist_refuses_everything() -> None:
    assert command_violation(["airflow", "tasks", "run"], []) is not None
