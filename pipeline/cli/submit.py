"""`pipeline submit`: publish task requests, one from flags or many from NDJSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import Progress

from pipeline import messages
from pipeline.cli.common import CliError, console, run, settings
from pipeline.config import Settings
from pipeline.kafka import make_producer, send_all, started
from pipeline.messages import InvalidMessage, Kind, TaskKey

CHUNK = 1000


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"{flag} expects NAME=VALUE, got {item!r}")
        pairs[name] = value
    return pairs


def _checked(request: dict[str, Any], where: str) -> tuple[bytes, bytes]:
    """Validate one request; return its (partition key, encoded value)."""
    request.setdefault("schema_version", messages.SCHEMA_VERSION)
    request.setdefault("submitted_at", messages.utc_now())
    try:
        messages.validate(Kind.TASK_REQUEST, request)
    except InvalidMessage as exc:
        raise CliError(f"{where}: invalid request: {exc.message}") from None
    return TaskKey.from_wire(request["key"]).partition_key, messages.encode(request)


def _read_ndjson(source: str) -> list[tuple[bytes, bytes]]:
    """Every line validated before anything is sent, so a bad file publishes nothing."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror}") from None
    checked = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CliError(f"{source}:{number}: not valid JSON: {exc}") from None
        if not isinstance(request, dict):
            raise CliError(f"{source}:{number}: expected a JSON object")
        checked.append(_checked(request, f"{source}:{number}"))
    if not checked:
        raise CliError(f"{source} holds no requests")
    return checked


async def _publish(config: Settings, records: list[tuple[bytes, bytes]], show: bool) -> None:
    topic = config.topic.requests
    async with started(make_producer(config.kafka, "submit"), config.kafka) as producer:
        shown = show and console.is_terminal  # piped, a transient bar would leave a blank line
        with Progress(console=console, disable=not shown, transient=True) as progress:
            bar = progress.add_task(f"publishing to {topic}", total=len(records))
            for start in range(0, len(records), CHUNK):
                chunk = records[start : start + CHUNK]
                await send_all(producer, [(topic, key, value) for key, value in chunk])
                progress.advance(bar, len(chunk))


def submit(
    ctx: typer.Context,
    command: Annotated[
        list[str] | None,
        typer.Argument(help="The argv to run, after -- (needed when it has options of its own)."),
    ] = None,
    dag: Annotated[str | None, typer.Option("--dag", help="dag_id")] = None,
    task: Annotated[str | None, typer.Option("--task", help="task_id")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="run_id")] = None,
    map_index: Annotated[
        int, typer.Option("--map-index", help="Mapped task index; -1 for an unmapped task.")
    ] = -1,
    try_number: Annotated[
        int, typer.Option("--try", help="Try number; a higher one is a new try.")
    ] = 1,
    queue: Annotated[
        str | None, typer.Option("--queue", help="Routing queue (default: the kubernetes queue).")
    ] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="Container image of the pod (Kubernetes).")
    ] = None,
    priority: Annotated[
        int | None, typer.Option("--priority", help="Airflow priority_weight (higher first).")
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", metavar="KEY=VALUE", help="Pod label; repeat for more."),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", metavar="KEY=VALUE", help="Environment variable; repeat."),
    ] = None,
    pod_override: Annotated[
        str | None, typer.Option("--pod-override", help="JSON partial V1Pod.")
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="NDJSON requests; - for stdin.")
    ] = None,
) -> None:
    """Publish task requests to the requests topic."""
    config = settings(ctx)
    if command and command[0].startswith("-"):  # unknown options are kept as arguments
        raise CliError(f"no such option: {command[0]} (the task's command goes after --)")
    if file is not None:
        if command:
            raise CliError("give either --file or a command, not both")
        records = _read_ndjson(file)
    else:
        missing = [n for n, v in [("--dag", dag), ("--task", task), ("--run", run_id)] if not v]
        if missing or not command:
            what = ", ".join(missing + ([] if command else ["a command after --"]))
            raise CliError(f"missing {what} (or use --file)")
        request = messages.make_request(
            TaskKey(dag or "", task or "", run_id or "", map_index, try_number),
            command,
            queue or config.kubernetes_queue,
            image=image,
            priority=priority,
            labels=_pairs(label or [], "--label") or None,
            env=_pairs(env or [], "--env") or None,
            executor_config=_pod_override(pod_override),
        )
        records = [_checked(dict(request), "request")]
    run(_publish(config, records, show=len(records) > 1))
    console.print(f"published {len(records)} request(s) to {config.topic.requests}")


def _pod_override(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        override = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"--pod-override is not valid JSON: {exc}") from None
    return {"pod_override": override}
