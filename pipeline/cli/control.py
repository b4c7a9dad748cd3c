"""`pipeline cancel` and `pipeline logs`: operate on tasks through the reducer's API.

`cancel` looks each try up in the API (the newest try when `--try` is not given), skips
finished ones, and publishes a TaskControl per unfinished try on the control topic itself,
as `submit` publishes requests. `--force` publishes for a try the reducer does not know
yet (submitted, not routed): the executor stages remember it and never launch the request.
"""

from __future__ import annotations

import getpass
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from pipeline.cli.common import CliError, console, run, settings
from pipeline.cli.status import api_url
from pipeline.client import ApiError, ApiUnavailable, PipelineClient, UnknownTask
from pipeline.config import Settings
from pipeline.kafka import make_producer, send_all, started
from pipeline.messages import TERMINAL_STATES, State, TaskKey, encode, make_control

KEY_HELP = "DAG/TASK/RUN[/MAP_INDEX]"
WAIT_FOR_LOG_S = 1.0


def is_terminal(state: str) -> bool:
    return State(state) in TERMINAL_STATES


def parse_key(spec: str, try_number: int | None) -> tuple[TaskKey, bool]:
    """A task key from `DAG/TASK/RUN[/MAP_INDEX[/TRY]]`; whether the try was given."""
    parts = spec.split("/")
    if len(parts) < 3 or len(parts) > 5 or not all(parts):
        raise CliError(f"task key {spec!r} is not {KEY_HELP}")
    try:
        map_index = int(parts[3]) if len(parts) > 3 else -1
        given = int(parts[4]) if len(parts) > 4 else try_number
    except ValueError:
        raise CliError(f"task key {spec!r}: map index and try must be integers") from None
    return TaskKey(parts[0], parts[1], parts[2], map_index, given or 0), given is not None


def client_for(config: Settings) -> PipelineClient:
    token = config.reducer.api_token
    return PipelineClient(api_url(config), token.get_secret_value() if token else None)


def resolve(client: PipelineClient, key: TaskKey, try_given: bool) -> dict[str, Any] | None:
    """The state of the try (the newest when none was given); None when unknown."""
    try:
        if try_given:
            return client.task(key)
        tries = client.tries(key)
    except ApiUnavailable as exc:
        raise CliError(str(exc)) from None
    return tries[-1] if tries else None


def _keys_from_file(path: str) -> list[str]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    specs = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                k = TaskKey.from_wire(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise CliError(f"{path}:{number}: not a task key object") from None
            specs.append(f"{k.dag_id}/{k.task_id}/{k.run_id}/{k.map_index}/{k.try_number}")
        else:
            specs.append(line)
    return specs


def _targets(
    client: PipelineClient,
    keys: list[str],
    try_number: int | None,
    force: bool,
) -> tuple[list[TaskKey], list[str]]:
    """Tries to cancel, and a line for each one skipped."""
    wanted: list[TaskKey] = []
    notes: list[str] = []
    for spec in keys:
        key, try_given = parse_key(spec, try_number)
        state = resolve(client, key, try_given)
        if state is None:
            if force and try_given:
                wanted.append(key)
                continue
            hint = "" if try_given else " (give --try N --force to cancel it before it is routed)"
            raise CliError(f"unknown task {spec}{hint}")
        found = TaskKey.from_wire(state["key"])
        if is_terminal(state["state"]):
            notes.append(f"{found} already finished ({state['state']}); left as it is")
        else:
            wanted.append(found)
    return wanted, notes


async def _publish(config: Settings, keys: list[TaskKey], reason: str, by: str) -> list[str]:
    controls = [make_control(key, reason, by) for key in keys]
    topic = config.topic.control
    async with started(make_producer(config.kafka, "cancel"), config.kafka) as producer:
        await send_all(
            producer,
            [(topic, TaskKey.from_wire(c["key"]).partition_key, encode(c)) for c in controls],
        )
    return [c["control_id"] for c in controls]


def cancel(
    ctx: typer.Context,
    key: Annotated[str | None, typer.Argument(help=f"{KEY_HELP} of the task to cancel.")] = None,
    try_number: Annotated[
        int | None, typer.Option("--try", help="Which try (default: the newest).")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the task's state.")] = "",
    run_id: Annotated[
        str | None, typer.Option("--run", help="Cancel every unfinished task of this run.")
    ] = None,
    dag: Annotated[str | None, typer.Option("--dag", help="With --run: only this DAG.")] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Task keys, one a line; - for stdin.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --try: publish for a try not known yet.")
    ] = False,
) -> None:
    """Cancel tasks: a queued one is never launched, a running pod or Celery task is ended."""
    config = settings(ctx)
    client = client_for(config)
    requested_by = getpass.getuser()
    if sum(x is not None for x in (key, run_id, file)) != 1:
        raise CliError("give one of: a task key, --run RUN, or --file FILE")
    if run_id is not None:
        try:
            states = client.tasks(run_id=run_id, dag_id=dag, limit=10_000)
        except (ApiError, ApiUnavailable) as exc:
            raise CliError(str(exc)) from None
        targets = [TaskKey.from_wire(s["key"]) for s in states if not is_terminal(s["state"])]
        notes = [f"{len(states) - len(targets)} finished task(s) of run {run_id} left as they are"]
        if not states:
            raise CliError(f"unknown run {run_id}")
    else:
        specs = [key] if key is not None else _keys_from_file(file or "-")
        try:
            targets, notes = _targets(client, specs, try_number, force)
        except ApiError as exc:
            raise CliError(str(exc)) from None
    for note in notes:
        console.print(note, markup=False, highlight=False)
    if not targets:
        return
    run(_publish(config, targets, reason, requested_by))
    for target in targets:
        console.print(f"cancel requested for {target}", markup=False, highlight=False)


def _follow(client: PipelineClient, key: TaskKey, tail: int | None) -> Iterator[str]:
    """The followed log; a try that has printed nothing yet (queued, pending) is waited for
    until it has a log or ends."""
    while True:
        try:
            yield from client.follow_logs(key, tail)
            return
        except UnknownTask:
            state = client.task(key)
            if state is None or is_terminal(state["state"]):
                raise
            time.sleep(WAIT_FOR_LOG_S)


def logs(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help=f"{KEY_HELP} of the task.")],
    try_number: Annotated[
        int | None, typer.Option("--try", help="Which try (default: the newest).")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the try ends.")
    ] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", min=0, help="Only the last N lines.")
    ] = None,
) -> None:
    """Print a task's output: live from its pod or worker, or as kept after it finished.

    With --follow, a task that has not started yet is waited for."""
    config = settings(ctx)
    client = client_for(config)
    task_key, try_given = parse_key(key, try_number)
    state = resolve(client, task_key, try_given)
    if state is None:
        raise CliError(f"unknown task {key}")
    found = TaskKey.from_wire(state["key"])
    out = sys.stdout
    try:
        if follow:
            for chunk in _follow(client, found, tail):
                out.write(chunk)
                out.flush()
        else:
            out.write(client.logs(found, tail))
    except UnknownTask:
        raise CliError(f"no log for {found} yet (state {state['state']})") from None
    except (ApiError, ApiUnavailable) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        pass
    out.flush()
