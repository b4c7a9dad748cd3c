"""`pipeline config show`: the effective configuration, secrets masked."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.syntax import Syntax

from pipeline.cli.common import console, settings
from pipeline.config import masked

config_app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)


@config_app.command("show")
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Plain JSON output.")] = False,
) -> None:
    """Print the effective settings (env, then --config file, then defaults)."""
    text = orjson.dumps(masked(settings(ctx)), option=orjson.OPT_INDENT_2).decode()
    if as_json or not console.is_terminal:  # piped: no colours, no padding to the width
        print(text)
    else:
        console.print(Syntax(text, "json"))
