"""Every command explains itself: `--help` renders for each one, brackets and all."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command under a click group, as argv prefixes."""
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if hasattr(command, "commands"):
            paths.extend(command_paths(command, (*prefix, name)))
    return paths


@pytest.mark.parametrize("path", command_paths(typer.main.get_command(app)), ids=" ".join)
def test_help_renders(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("pipeline ")
