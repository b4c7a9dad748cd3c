"""The `pipeline` command. Nothing imports this package; it imports stages lazily."""

from __future__ import annotations

import logging
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import (
    bench,
    celery_cmd,
    config_cmd,
    control,
    dev,
    sandbox,
    stages,
    submit,
    topics,
    ui,
)
from pipeline.cli.common import CliError
from pipeline.cli.dlq import dlq_app
from pipeline.cli.replay import replay
from pipeline.cli.status import status
from pipeline.config import ConfigError
from pipeline.kafka import BrokerUnreachable
from pipeline.sandbox.broker import BrokerStartError

app = typer.Typer(
    name="pipeline",
    help="Run Airflow-style tasks on Kubernetes and Celery through Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help shows brackets as written, e.g. DAG[/TASK]
)


def _version(show: bool) -> None:
    if show:
        print(f"pipeline {version('kafka-task-pipeline')}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (env vars win).")
    ] = None,
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    ctx.obj = {"config": config}


# a command's own options (`python -c`) are its arguments, even when `--` was forgotten
app.command("submit", context_settings={"ignore_unknown_options": True})(submit.submit)
app.command("run")(stages.run_stage)
app.command("bench")(bench.bench)
app.command("tail")(topics.tail)
app.command("status")(status)
app.command("cancel")(control.cancel)
app.command("logs")(control.logs)
app.command("replay")(replay)
app.command("celery-worker")(celery_cmd.celery_worker)
app.command("dev")(dev.dev)
app.command("ui")(ui.ui)
app.add_typer(topics.topics_app, name="topics")
app.add_typer(config_cmd.config_app, name="config")
app.add_typer(sandbox.sandbox_app, name="sandbox")
app.add_typer(dlq_app, name="dlq")

EXPECTED_ERRORS = (CliError, ConfigError, BrokerUnreachable, BrokerStartError)


def main() -> None:
    """Entry point: expected errors become one line on stderr and exit code 2."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # errors surface as one line
    try:
        app()
    except EXPECTED_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
