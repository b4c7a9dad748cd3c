"""`pipeline bench NAME`: a stage against its baseline, measured in the same run."""

from __future__ import annotations

import importlib
import os
import platform
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from pipeline.bench import BenchResult
from pipeline.cli.common import CliError, console, run

# name -> module exposing `async def run(n: int) -> BenchResult` and `DEFAULT_N`.
BENCHES: dict[str, str] = {
    "router": "pipeline.bench.router",
    "launcher": "pipeline.bench.launcher",
    "celery": "pipeline.bench.celery",
    "reducer": "pipeline.bench.reducer",
    "kube": "pipeline.bench.kube",
    "e2e": "pipeline.bench.end_to_end",
}


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


def run_one(name: str, n: int | None) -> BenchResult:
    module = importlib.import_module(BENCHES[name])
    runner: Callable[[int], Coroutine[Any, Any, BenchResult]] = module.run
    return run(runner(n or module.DEFAULT_N))


def report(results: list[BenchResult]) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": [r.to_json() for r in results],
    }


def bench(
    name: Annotated[str, typer.Argument(help="Which benchmark, or 'all'.")],
    n: Annotated[int | None, typer.Option("-n", min=1, help="Work items.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Write a JSON report here ('all' default).")
    ] = None,
) -> None:
    """Run a benchmark: its baseline and the subject over the same work, then the ratio."""
    if name != "all" and name not in BENCHES:
        known = ", ".join(sorted(BENCHES))
        raise CliError(f"unknown benchmark {name!r}; choose one of: {known}, all")
    names = list(BENCHES) if name == "all" else [name]
    results = [run_one(each, n) for each in names]
    if name == "all" and report_path is None:
        report_path = Path("bench-report.json")
    if report_path is not None:
        report_path.write_bytes(orjson.dumps(report(results), option=orjson.OPT_INDENT_2))
    if as_json:
        shown = results[0].to_json() if name != "all" else report(results)
        print(orjson.dumps(shown).decode())
        return
    show(results)
    for result in results:
        for key, value in result.extra.items():
            console.print(f"{result.name} {key}: {orjson.dumps(value).decode()}", highlight=False)
    if report_path is not None:
        console.print(f"report written to {report_path}")
