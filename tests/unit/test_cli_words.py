"""The CLI's words: every option explains itself, unknown choices are refused with the valid
ones, and a command given without `--` is still the command."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app, submit
from pipeline.messages import State
from pipeline.stages import STAGES


def options(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    """(command path, option, help) for every option of every command."""
    found = []
    for name, command in group.commands.items():
        path = " ".join((*prefix, name))
        if hasattr(command, "commands"):
            found += options(command, (*prefix, name))
            continue
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                found.append((path, param.opts[0], param.help or ""))
    return found


def test_every_option_has_help_text() -> None:
    missing = [
        f"{path} {opt}" for path, opt, text in options(typer.main.get_command(app)) if not text
    ]
    assert not missing


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    ("args", "choices"),
    [
        (("status", "--state", "sucess"), [s.value for s in State]),
        (("status", "--executor", "k8s"), ["kubernetes", "celery"]),
        (("run", "routr"), list(STAGES)),
    ],
)
def test_an_unknown_choice_is_refused_with_the_valid_ones(
    args: tuple[str, ...], choices: list[str]
) -> None:
    result = invoke(*args)
    assert result.exit_code != 0
    message = str(result.exception)
    assert repr(args[-1]) in message
    assert all(choice in message for choice in choices), message


def test_help_lists_the_choices() -> None:
    assert all(name in " ".join(invoke("run", "--help").output.split()) for name in STAGES)
    status_help = " ".join(invoke("status", "--help").output.split())
    assert all(s.value in status_help for s in State)
    assert "KEY=VALUE" in invoke("submit", "--help").output


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def capture(config: Any, records: list[tuple[bytes, bytes]], show: bool) -> None:
        sent.extend(orjson.loads(value) for _, value in records)

    monkeypatch.setattr(submit, "_publish", capture)
    return sent


def test_a_command_with_options_of_its_own_needs_no_dashes(
    published: list[dict[str, Any]],
) -> None:
    result = invoke("submit", "--dag", "d", "--task", "t", "--run", "r", "python", "-c", "x=1")
    assert result.exit_code == 0, result.output
    [request] = published
    assert request["command"] == ["python", "-c", "x=1"]


def test_a_mistyped_option_before_the_command_is_named(published: list[dict[str, Any]]) -> None:
    result = invoke("submit", "--dag", "d", "--task", "t", "--run", "r", "--qeue", "q", "true")
    assert result.exit_code != 0
    assert "--qeue" in str(result.exception) and "after --" in str(result.exception)
    assert not published


def test_config_show_piped_is_plain_json_without_padding() -> None:
    result = invoke("config", "show")
    assert result.exit_code == 0
    assert not [line for line in result.output.splitlines() if line != line.rstrip()]
    assert orjson.loads(result.output)["kafka"]["bootstrap_servers"]
