"""`pipeline dev [--demo N]`: the whole pipeline on loopback, optionally with a demo workload."""

from __future__ import annotations

import asyncio
import shlex
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.cli.common import console, err_console, run
from pipeline.config import mask_url
from pipeline.kafka import count_records, make_producer, send_all, started
from pipeline.messages import TERMINAL_STATES, State
from pipeline.sandbox.dev import DevEnvironment, DevError, DevOptions, dev_environment
from pipeline.sandbox.supervise import supervise
from pipeline.sandbox.workload import Workload, mixed_workload


def endpoints(env: DevEnvironment) -> Table:
    table = Table(title="pipeline dev: everything on loopback", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("Kafka bootstrap", env.settings.kafka.bootstrap_servers)
    table.add_row(
        "Kubernetes API", f"{env.emulator.url} (kubeconfig {env.emulator.kubeconfig_path})"
    )
    table.add_row("Celery broker", mask_url(env.settings.celery.broker_url.get_secret_value()))
    table.add_row("State API", env.api_url)
    table.add_row("dashboard", env.dashboard_url)
    for name, port in env.http_ports.items():
        table.add_row(f"{name} health/metrics", f"http://127.0.0.1:{port}")
    removed = " (removed on a clean exit; --work-dir keeps logs)" if env.temporary else ""
    table.add_row("logs", f"{env.work_dir}{removed}")
    return table


def print_exports(env: DevEnvironment) -> None:
    """How a second terminal points the CLI at this sandbox: the lines, and a file of them."""
    path = env.write_env_file()
    console.print(f"To use it from another terminal: source {path}", soft_wrap=True)
    for name, value in env.client_env().items():
        shown = mask_url(value) if "CELERY" in name else value
        console.print(f"  export {name}={shlex.quote(shown)}", soft_wrap=True, markup=False)


def submitted_line(work: Workload) -> str:
    """What was sent and why the count to follow is what it is."""
    records, tasks = len(work.records), len(work.expected)
    keyed = sum(1 for state in work.expected.values() if state is State.DEAD_LETTERED)
    repeated = records - work.invalid - (tasks - keyed)
    line = f"submitted {records} requests ({work.invalid} invalid"
    if repeated:
        line += f", {repeated} duplicates"
    line += f"); following {tasks} tasks: {tasks - keyed} valid + {keyed} invalid with a "
    line += f"readable task key (they end dead_lettered; the other {work.invalid - keyed} "
    return line + "only reach the dead-letter topic)"


async def run_states(session: aiohttp.ClientSession, api_url: str, run_id: str) -> list[Any]:
    url = f"{api_url}/tasks?run_id={run_id}&limit=100000"
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return []
            tasks: list[Any] = (await response.json())["tasks"]
            return tasks
    except aiohttp.ClientError:
        return []


def summary(work: Workload, states: list[Any], dead_letters: int) -> Table:
    seen = Counter((s.get("executor", "none"), s["state"]) for s in states)
    expected = work.expected_counts()
    table = Table(title=f"demo run {work.run_id}: terminal states")
    for column in ("executor", "state", "tasks", "expected"):
        table.add_column(column, justify="right" if column in ("tasks", "expected") else "left")
    for executor, state in sorted(set(seen) | set(expected)):
        table.add_row(executor, state, str(seen[executor, state]), str(expected[executor, state]))
    table.add_row("(dlq)", "invalid messages", str(dead_letters), str(work.invalid))
    return table


async def follow(env: DevEnvironment, work: Workload) -> list[Any]:
    """Live progress until every task of the run is terminal; returns the final states."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    )  # fmt: skip
    bar = progress.add_task("tasks terminal", total=len(work.expected))
    async with aiohttp.ClientSession() as session:
        with Live(progress, console=console, refresh_per_second=4):
            while True:
                states = await run_states(session, env.api_url, work.run_id)
                done = [s for s in states if s["state"] in TERMINAL_STATES]
                progress.update(bar, completed=len(done))
                if len(done) >= len(work.expected):
                    return states
                await asyncio.sleep(0.5)  # a child that dies is restarted by the supervisor


async def publish(env: DevEnvironment, work: Workload) -> None:
    kafka = env.settings.kafka
    topic = env.settings.topic.requests
    async with started(make_producer(kafka, "demo"), kafka) as producer:
        await send_all(producer, [(topic, key, value) for key, value in work.records])


def stop_on_signals() -> None:
    """SIGINT/SIGTERM cancel the run once, so every child is stopped on the way out.

    The children run in sessions of their own (a terminal's Ctrl-C reaches only us), so
    this process must outlive them; later signals are ignored until the cleanup is done.
    """
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None

    def first_signal() -> None:
        console.print("stopping every process ...")
        main_task.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first_signal)


async def _dev(demo: int | None, keep_running: bool, options: DevOptions) -> None:
    stop_on_signals()
    console.print("starting broker, Kubernetes emulator, Celery worker and every stage ...")
    async with dev_environment(options) as env:
        await env.wait_ready()
        console.print(endpoints(env))
        print_exports(env)
        supervisor = asyncio.create_task(supervise(env, lambda line: console.print(line)))
        try:
            await _session(env, demo, keep_running)
        finally:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)


async def _session(env: DevEnvironment, demo: int | None, keep_running: bool) -> None:
    """Wait for Ctrl-C, or run the demo first."""
    if demo is None:
        console.print("ready; Ctrl-C stops everything")
        await asyncio.Event().wait()
        return
    work = mixed_workload(demo, run_id=f"demo-{int(time.time())}")
    await publish(env, work)
    console.print(submitted_line(work), soft_wrap=True)
    states = await follow(env, work)
    console.print()
    console.print(
        summary(work, states, await count_records(env.settings.kafka, env.settings.topic.dlq))
    )
    if keep_running:
        console.print("demo done; the pipeline keeps running, Ctrl-C stops everything")
        await asyncio.Event().wait()


def dev(
    demo: Annotated[
        int | None, typer.Option("--demo", min=1, help="Submit N mixed tasks and follow them.")
    ] = None,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="After the demo, keep the pipeline up.")
    ] = False,
    partitions: Annotated[
        int, typer.Option("--partitions", min=1, help="Partitions per topic.")
    ] = 4,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Keep logs here (default: a temp dir).")
    ] = None,
    random_ports: Annotated[
        bool,
        typer.Option(
            "--random-ports",
            help="Free ports for the broker and the state API, not the defaults 9092 and 8090.",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline on loopback, without Docker (Ctrl-C stops everything).

    The broker listens on 127.0.0.1:9092 and the state API on 8090 when those are free (what
    the CLI expects unconfigured); it prints, and writes to dev.env in the work dir, the
    `export PIPELINE_...` lines that point another terminal at it."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    options = DevOptions(partitions=partitions, work_dir=work_dir, default_ports=not random_ports)
    try:
        run(_dev(demo, keep_running, options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("stopped")
    except DevError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
