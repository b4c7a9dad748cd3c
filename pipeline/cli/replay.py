"""`pipeline replay TOPIC`: print, refold, compare or re-publish a range of a topic."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline import messages
from pipeline.cli.common import CliError, console, err_console, run, settings, topic_name
from pipeline.cli.status import WRAPPING, api_url, fetch, key_text, when
from pipeline.cli.topics import render
from pipeline.config import Settings

if TYPE_CHECKING:
    from pipeline.replay import Bound, Record


@contextlib.contextmanager
def progress_bar(quiet: bool) -> Iterator[Progress]:
    """A progress bar on stderr (so stdout stays clean for --json and pipes)."""
    bar = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeRemainingColumn(), console=err_console, transient=True,
        disable=quiet,
    )  # fmt: skip
    with bar:
        yield bar


async def read(
    config: Settings,
    topics: list[str],
    start: Bound | None,
    end: Bound | None,
    key: str | None,
    partition: int | None = None,
) -> list[Record]:
    """Every record of `topics` in the range (and matching `key`), with a progress bar."""
    from pipeline.replay import read_range

    match = messages.key_matcher(key) if key else None
    records: list[Record] = []
    with progress_bar(quiet=not err_console.is_terminal) as bar:
        task = bar.add_task("reading", total=None)
        for topic in topics:

            def grow(total: int, task: Any = task) -> None:
                bar.update(task, total=(bar.tasks[0].total or 0) + total)

            batches: AsyncIterator[list[Record]] = read_range(
                config.kafka, topic, start, end, partition=partition, on_total=grow
            )
            async for batch in batches:
                bar.advance(task, len(batch))
                records.extend(r for r in batch if match is None or match(r.key))
    return records


async def republish(config: Settings, records: list[Record], into: str) -> None:
    from pipeline.kafka import make_producer, send_all, started

    producer = make_producer(config.kafka, "replay")
    async with started(producer, config.kafka):
        with progress_bar(quiet=not err_console.is_terminal) as bar:
            task = bar.add_task(f"re-publishing to {into}", total=len(records))
            for i in range(0, len(records), 500):
                chunk = records[i : i + 500]
                await send_all(producer, [(into, r.key, r.value or b"") for r in chunk])
                bar.advance(task, len(chunk))


def show_states(states: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for state in states:
            print(orjson.dumps(state).decode())
        return
    table = Table(title=f"rebuilt state of {len(states)} task(s)")
    for column in ("task", "state", "executor", "updated", "history", "illegal"):
        table.add_column(column, overflow="fold", no_wrap=column not in WRAPPING)
    for s in states:
        table.add_row(
            key_text(s), s["state"], s.get("executor", ""), when(s["updated_at"]),
            str(len(s["history"])), str(s.get("illegal_transitions", 0)),
        )  # fmt: skip
    console.print(table)


def diff(rebuilt: list[dict[str, Any]], live: list[dict[str, Any]]) -> dict[str, Any]:
    """Keys only one side has, and keys whose state differs (with the differing fields)."""
    mine = {key_text(s): s for s in rebuilt}
    theirs = {key_text(s): s for s in live}
    changed = {}
    for k in mine.keys() & theirs.keys():
        fields = sorted(
            f for f in mine[k].keys() | theirs[k].keys() if mine[k].get(f) != theirs[k].get(f)
        )
        if fields:
            changed[k] = fields
    return {
        "only_rebuilt": sorted(mine.keys() - theirs.keys()),
        "only_live": sorted(theirs.keys() - mine.keys()),
        "different": changed,
        "same": len(mine.keys() & theirs.keys()) - len(changed),
    }


def forgotten(config: Settings, state: dict[str, Any]) -> bool:
    """Whether the reducer's retention has forgotten this refolded try (not a difference)."""
    from pipeline.reducer.retention import forgettable, horizon

    horizon_s = horizon(time.time(), config.reducer.retention_s)
    return horizon_s is not None and forgettable(state, horizon_s)  # type: ignore[arg-type]


def show_diff(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(result).decode())
        return
    console.print(
        f"same: {result['same']}  different: {len(result['different'])}  "
        f"only rebuilt: {len(result['only_rebuilt'])}  only live: {len(result['only_live'])}"
    )
    for key, fields in result["different"].items():
        console.print(f"[yellow]~[/] {key}: {', '.join(fields)}", highlight=False)
    for key in result["only_rebuilt"]:
        console.print(f"[green]+[/] {key} (not in the live state)", highlight=False)
    for key in result["only_live"]:
        console.print(f"[red]-[/] {key} (live only)", highlight=False)


async def nothing_in_range(config: Settings, topic: str) -> str:
    """The warning for an empty range, with where each partition ends: offsets count per
    partition, so a range taken from a total count often misses them all."""
    from pipeline.kafka import fetch_highwaters, topic_partitions

    ends = await fetch_highwaters(config.kafka, await topic_partitions(config.kafka, topic))
    sizes = " ".join(f"{tp.partition}:{n}" for tp, n in sorted(ends.items()))
    return (
        f"no records in that range of {topic}: --from/--to are offsets within each partition "
        f"(or ISO-8601 times), and its partitions end at {sizes} (partition:next offset)"
    )


def bound(text: str | None) -> Bound | None:
    from pipeline.replay import Bound

    if text is None:
        return None
    try:
        return Bound.parse(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


async def _replay(config: Settings, topic: str, options: dict[str, Any]) -> None:
    from pipeline.replay import merged_by_time, rebuild_records

    start, end = bound(options["start"]), bound(options["end"])
    rebuilding = options["rebuild"] or options["diff"]
    if rebuilding:
        if topic != config.topic.events:
            raise CliError(f"--rebuild/--diff refold the events topic ({config.topic.events})")
        end = bound(options["until"]) or end
        topics = [config.topic.events, config.topic.kubernetes, config.topic.celery]
    else:
        topics = [topic]
    try:
        records = await read(config, topics, start, end, options["key"], options["partition"])
    except LookupError as exc:
        raise CliError(f"{exc} (pipeline topics create)") from None
    if not records:
        err_console.print(await nothing_in_range(config, topic), highlight=False, soft_wrap=True)
    if options["into"]:
        await republish(config, records, topic_name(config, options["into"]))
        err_console.print(f"re-published {len(records)} record(s) to {options['into']}")
    elif rebuilding:
        states: list[dict[str, Any]] = sorted(
            (dict(s) for s in rebuild_records(records, config).values()), key=key_text
        )
        if options["diff"]:
            states = [s for s in states if not forgotten(config, s)]
            live = fetch(api_url(config), "/tasks?limit=10000")["tasks"]
            if options["key"]:
                keys = {key_text(s) for s in states}
                live = [s for s in live if key_text(s) in keys]
            show_diff(diff(states, live), options["json"])
        else:
            show_states(states, options["json"])
    else:
        ordered = merged_by_time(records) if options["merge"] else sorted(
            records, key=lambda r: (r.partition, r.offset)
        )  # fmt: skip
        for record in ordered:
            render(record, options["json"])


def replay(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic name or role: events, requests, dlq, ...")],
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="First offset in every partition (offsets count per partition), or an "
            "ISO-8601 time with a zone (inclusive).",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", help="End offset in every partition, or ISO-8601 time (exclusive)."),
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="DAG[/TASK[/RUN[/MAP_INDEX]]] filter.")
    ] = None,
    partition: Annotated[
        int | None, typer.Option("--partition", min=0, help="Only this partition of the topic.")
    ] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Merge partitions by time.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Refold into fresh state.")] = False,
    until: Annotated[
        str | None, typer.Option("--until", help="With --rebuild: stop at this time/offset.")
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--diff",
            help="Rebuild and compare with the live state (leaving out the finished tries "
            "the reducer's retention has forgotten).",
        ),
    ] = False,
    into: Annotated[
        str | None, typer.Option("--into", help="Re-publish the range to this topic.")
    ] = None,
) -> None:
    """Replay a range of a topic: print it in order, rebuild state from it, or re-publish it."""
    config = settings(ctx)
    options = {
        "start": start, "end": end, "key": key, "partition": partition, "merge": merge,
        "json": as_json,
        "rebuild": rebuild, "until": until, "diff": compare, "into": into,
    }  # fmt: skip
    try:
        run(_replay(config, topic_name(config, topic), options))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
