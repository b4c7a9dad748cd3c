"""`pipeline run STAGE`: run one stage process. Stages are imported only when chosen."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from pipeline.cli.common import CliError, settings
from pipeline.config import Settings
from pipeline.stages import STAGES


def load_entry(spec: str) -> Callable[[Settings], int]:
    module, _, attr = spec.partition(":")
    entry: Callable[[Settings], int] = getattr(importlib.import_module(module), attr)
    return entry


def run_stage(
    ctx: typer.Context,
    stage: Annotated[
        str, typer.Argument(help=f"Which stage to run: {', '.join(STAGES)}.", show_default=False)
    ],
) -> None:
    """Run one stage until SIGTERM/SIGINT (health, metrics and logs from the runtime)."""
    if stage not in STAGES:
        known = ", ".join(sorted(STAGES)) or "none yet"
        raise CliError(f"unknown stage {stage!r}; choose one of: {known}")
    sys.exit(load_entry(STAGES[stage])(settings(ctx)))
