"""`pipeline ui`: the web dashboard, against any reducer query API."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import typer

from pipeline.cli.common import run, settings
from pipeline.cli.status import api_url


def ui(
    ctx: typer.Context,
    api: Annotated[
        str | None,
        typer.Option("--api", help="Reducer API URL (default: ui.api_url, else the reducer's)."),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Listen address (ui.host).")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="Port (ui.port).")
    ] = None,
    actions: Annotated[
        bool | None,
        typer.Option("--actions/--read-only", help="Allow cancel and redrive (ui.actions)."),
    ] = None,
) -> None:
    """Serve the live dashboard: overview, tasks, task detail, dead letters, stages."""
    from pipeline.ui.server import serve  # aiohttp app and templates only when asked for

    config = settings(ctx)
    chosen = {"host": host, "port": port, "actions": actions, "api_url": api}
    config.ui = config.ui.model_copy(update={k: v for k, v in chosen.items() if v is not None})
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        run(serve(config, (config.ui.api_url or api_url(config)).rstrip("/")))
