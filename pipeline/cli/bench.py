"""`pipeline bench NAME`: a stage against its baseline, measured in the same run."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from pipeline.bench import BenchResult, end_to_end, launcher
from pipeline.bench.end_to_end import Options
from pipeline.cli.common import CliError, console, run

# name -> module exposing `async def run(n: int) -> BenchResult` and `DEFAULT_N`.
BENCHES: dict[str, str] = {
    "router": "pipeline.bench.router",
    "launcher": "pipeline.bench.launcher",
    "celery": "pipeline.bench.celery",
    "reducer": "pipeline.bench.reducer",
    "kube": "pipeline.bench.kube",
    "e2e": "pipeline.bench.end_to_end",
    "dashboard": "pipeline.bench.dashboard",
    "airflow": "pipeline.bench.airflow",
}


def airflow_installed() -> bool:
    return importlib.util.find_spec("airflow") is not None


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


def show_steps(result: BenchResult) -> None:
    """The e2e ladder: one row per offered rate, latencies from each task's due time."""
    table = Table(
        title=f"e2e, {result.params['executor']}: sustained "
        f"{result.extra['sustained_per_s']:g}/s (ms: p50 / p99 / max)"
    )
    columns = (
        "offered/s",
        "achieved/s",
        "not done",
        "queued",
        "launched",
        "running",
        "terminal",
        "CPU ms/task",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for step in result.extra["steps"]:
        latency = step["latency_from_due"]
        cells = [
            f"{latency[m]['p50_ms']:,.0f} / {latency[m]['p99_ms']:,.0f} / "
            f"{latency[m]['max_ms']:,.0f}"
            for m in end_to_end.MILESTONES
        ]
        table.add_row(
            f"{step['offered_per_s']:g}",
            f"{step['achieved_per_s']:g}",
            str(step["not_terminal"]),
            *cells,
            f"{step['cpu_ms_per_task']['total']:.1f}",
        )
    console.print(table)
    for step in result.extra["steps"]:
        hops = ", ".join(
            f"{hop} {q['p50_ms']:g}/{q['p99_ms']:g}"
            for hop, q in step["hops_from_event_times"].items()
        )
        cpu = ", ".join(f"{k} {v:g}" for k, v in step["cpu_ms_per_task"].items())
        console.print(f"{step['offered_per_s']:g}/s hops ms p50/p99: {hops}", highlight=False)
        console.print(f"{step['offered_per_s']:g}/s CPU ms/task: {cpu}", highlight=False)


def run_one(name: str, n: int | None, options: Options | None = None) -> BenchResult:
    """One benchmark; `options` carries the setup flags of those that take them."""
    if name == "e2e":  # -n there is tasks per offered rate; unset, the rate's duration decides
        return run(end_to_end.run(n, options))
    if name == "launcher" and options is not None:
        return run(
            launcher.run(
                n or launcher.DEFAULT_N,
                api_latency_ms=options.api_latency_ms,
                replicas=options.replicas,
            )
        )
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
    rates: Annotated[
        list[float] | None,
        typer.Option(
            "--rate", min=0.1, help="e2e: offered tasks/s (repeatable); default a ladder."
        ),
    ] = None,
    duration_s: Annotated[
        float, typer.Option("--duration", min=0.1, help="e2e: seconds each rate is offered.")
    ] = 5.0,
    executor: Annotated[
        str, typer.Option("--executor", help="e2e: kubernetes, celery or mixed.")
    ] = "kubernetes",
    replicas: Annotated[
        int,
        typer.Option(
            "--replicas",
            min=1,
            help="e2e: each stage N times; launcher: N launcher processes against one.",
        ),
    ] = 1,
    api_latency_ms: Annotated[
        float,
        typer.Option(
            "--api-latency-ms", min=0, help="e2e, launcher: added to every Kubernetes call."
        ),
    ] = 0.0,
    parallelism: Annotated[
        int | None, typer.Option("--parallelism", min=1, help="e2e: the launcher's parallelism.")
    ] = None,
    partitions: Annotated[
        int, typer.Option("--partitions", min=1, help="e2e: partitions of every topic.")
    ] = 4,
) -> None:
    """Run a benchmark: its baseline and the subject over the same work, then the ratio."""
    if name != "all" and name not in BENCHES:
        known = ", ".join(sorted(BENCHES))
        raise CliError(f"unknown benchmark {name!r}; choose one of: {known}, all")
    if executor not in ("kubernetes", "celery", "mixed"):
        raise CliError(f"unknown executor {executor!r}; choose kubernetes, celery or mixed")
    options = end_to_end.Options(
        rates=rates or end_to_end.LADDER,
        duration_s=duration_s,
        executor=executor,  # type: ignore[arg-type]
        replicas=replicas,
        api_latency_ms=api_latency_ms,
        parallelism=parallelism,
        partitions=partitions,
    )
    names = (
        [b for b in BENCHES if b != "airflow" or airflow_installed()] if name == "all" else [name]
    )
    if names == ["airflow"] and not airflow_installed():
        raise CliError("the airflow benchmark needs the airflow extra: pip install '.[airflow]'")
    results = [run_one(each, n, options) for each in names]
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
        if result.name == "e2e":
            show_steps(result)
            continue
        for key, value in result.extra.items():
            console.print(f"{result.name} {key}: {orjson.dumps(value).decode()}", highlight=False)
    if report_path is not None:
        console.print(f"report written to {report_path}")
