"""`pipeline bench NAME`: a stage against its baseline, measured in the same run."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from pipeline.bench import BenchResult
from pipeline.cli.common import CliError, console, run

# name -> module exposing `async def run(n: int) -> BenchResult` and `DEFAULT_N`.
BENCHES: dict[str, str] = {"kube": "pipeline.bench.kube"}
BENCHES["router"] = "pipeline.bench.router"
BENCHES["launcher"] = "pipeline.bench.launcher"
BENCHES["reducer"] = "pipeline.bench.reducer"


def show(results: list[BenchResult]) -> None:
    table = Table(title="benchmarks (ratio = subject / baseline, same run)")
    for column in ("bench", "baseline", "baseline/s", "subject", "subject/s", "ratio"):
        table.add_column(column, justify="right" if column.endswith(("/s", "ratio")) else "left")
    for r in results:
        table.add_row(
            r.name, r.baseline, f"{r.baseline_per_s:,.0f}", r.subject, f"{r.subject_per_s:,.0f}",
            f"{r.ratio:.2f}",
        )  # fmt: skip
    console.print(table)


def bench(
    name: Annotated[str, typer.Argument(help="Which benchmark.")],
    n: Annotated[int | None, typer.Option("-n", min=1, help="Work items.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run a benchmark: its baseline and the subject over the same work, then the ratio."""
    if name not in BENCHES:
        raise CliError(f"unknown benchmark {name!r}; choose one of: {', '.join(sorted(BENCHES))}")
    module = importlib.import_module(BENCHES[name])
    runner: Callable[[int], Coroutine[Any, Any, BenchResult]] = module.run
    result = run(runner(n or module.DEFAULT_N))
    if as_json:
        print(orjson.dumps(result.to_json()).decode())
    else:
        show([result])
