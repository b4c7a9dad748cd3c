"""`pipeline topics create` and `pipeline tail`: topic administration and inspection."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Annotated, Any

import orjson
import typer
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from pipeline import messages
from pipeline.cli.common import CliError, console, err_console, run, settings, topic_name
from pipeline.config import Settings
from pipeline.kafka import config_drift, count_records, create_topics, make_consumer, started

topics_app = typer.Typer(help="Manage the pipeline's topics.", no_args_is_help=True)


@topics_app.command("create")
def create(
    ctx: typer.Context,
    partitions: Annotated[
        int | None, typer.Option("--partitions", min=1, help="Partitions per topic.")
    ] = None,
) -> None:
    """Create every pipeline topic that does not exist yet (the state topic compacted); say
    where an existing one's configs differ from what it would be created with."""
    config = settings(ctx)
    if partitions is not None:
        config.topic.partitions = partitions
    created = run(create_topics(config.kafka, config.topic))
    existing = [name for name in config.topic.all_names() if name not in created]
    try:
        drift = run(config_drift(config.kafka, config.topic, existing))
    except KafkaError as exc:  # a broker without DescribeConfigs: the topics are there
        err_console.print(f"note: could not compare the topics' configs: {exc!r}", markup=False)
        drift = {}
    for name in config.topic.all_names():
        console.print(f"{'created' if name in created else 'exists '} {name}", markup=False)
        for key, (have, want) in drift.get(name, {}).items():
            console.print(f"        {key} is {have or 'unset'}, wanted {want}", markup=False)


def record_json(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    """A record as JSON: the value parsed when it is JSON, else kept as text. A dead letter
    also gets `original_text`: its `original` (the exact bytes, base64) read as UTF-8."""
    value: Any
    try:
        value = orjson.loads(record.value) if record.value is not None else None
    except orjson.JSONDecodeError:
        value = record.value.decode(errors="replace") if record.value else None
    if isinstance(value, dict) and isinstance(value.get("original"), str) and "error" in value:
        with contextlib.suppress(ValueError):
            original = base64.b64decode(value["original"], validate=True)
            value["original_text"] = original.decode(errors="replace")
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": record.key.decode(errors="replace") if record.key is not None else None,
        "value": value,
    }


def render(record: ConsumerRecord[bytes, bytes], as_json: bool) -> None:
    shown = record_json(record)
    if as_json:
        print(orjson.dumps(shown).decode(), flush=True)
        return
    value = shown["value"]
    summary = value
    if isinstance(value, dict):
        summary = {k: v for k, v in value.items() if k not in ("schema_version", "key")}
    console.print(
        f"[dim]{record.partition}:{record.offset}[/] [bold]{shown['key']}[/] "
        f"{orjson.dumps(summary).decode()}",
        highlight=False,
        soft_wrap=True,
    )


async def _tail(
    config: Settings,
    topic: str,
    from_beginning: bool,
    key: str | None,
    limit: int | None,
    idle_timeout: float | None,
    as_json: bool,
) -> int:
    match = messages.key_matcher(key) if key else None
    consumer = make_consumer(
        config.kafka, group_id=None, client_id="tail",
        auto_offset_reset="earliest" if from_beginning else "latest",
    )  # fmt: skip
    shown = 0
    async with started(consumer, config.kafka):
        await consumer.topics()  # refreshes the cluster metadata
        ids = consumer.partitions_for_topic(topic)
        if not ids:
            raise CliError(f"topic {topic} does not exist (pipeline topics create)")
        consumer.assign([TopicPartition(topic, p) for p in sorted(ids)])
        if not from_beginning:
            there = await count_records(config.kafka, topic)
            err_console.print(
                f"waiting for new messages on {topic} ({there} already there: "
                "--from-beginning shows them first); Ctrl-C stops",
                highlight=False,
            )
        while limit is None or shown < limit:
            try:
                record = await asyncio.wait_for(consumer.getone(), idle_timeout)
            except TimeoutError:
                break
            if match is None or match(record.key):
                render(record, as_json)
                shown += 1
    return shown


def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic name or role: requests, events, dlq, ...")],
    from_beginning: Annotated[
        bool,
        typer.Option("--from-beginning", help="Print what is already there first, then follow."),
    ] = False,
    key: Annotated[
        str | None, typer.Option("--key", help="DAG[/TASK[/RUN[/MAP_INDEX]]] filter.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--max", min=1, help="Stop after N.")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option("--idle-timeout", help="Stop after S seconds of silence.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print a topic's messages as they arrive (Ctrl-C stops)."""
    config = settings(ctx)
    with contextlib.suppress(KeyboardInterrupt):
        run(
            _tail(
                config, topic_name(config, topic), from_beginning, key, limit, idle_timeout,
                as_json,
            )
        )  # fmt: skip
