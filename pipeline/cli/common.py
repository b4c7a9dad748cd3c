"""What every command shares: settings from `--config`, error reporting, async entry."""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from pipeline import eventloop
from pipeline.config import Settings, load_settings

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


class CliError(Exception):
    """Bad input or configuration: printed as one line, exit code 2."""


def settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """The effective settings for this invocation (env, then the `--config` file)."""
    config_file: Path | None = (ctx.find_root().obj or {}).get("config")
    return load_settings(config_file, **overrides)


def one_of(value: str | None, choices: Iterable[str], what: str) -> str | None:
    """`value` when it is one of `choices` (or None); a CliError naming them otherwise."""
    known = list(choices)
    if value is not None and value not in known:
        raise CliError(f"unknown {what} {value!r}; choose one of: {', '.join(known)}")
    return value


def run(coro: Coroutine[Any, Any, T]) -> T:
    return eventloop.run(coro)


def topic_name(settings: Settings, name: str) -> str:
    """Accept a topic's role (`requests`, `events`, ...) or its actual name."""
    roles = settings.topic.model_dump()
    value = roles.get(name)
    return value if isinstance(value, str) else name
