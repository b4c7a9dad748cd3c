"""`pipeline dlq list` and `pipeline dlq redrive`: inspect dead letters and send them back.

The two commands take the same selectors, so `list` with a selection previews exactly what
`redrive` with it would publish. A fix-and-resubmit round trip:
`pipeline dlq list --reason schema --json > fix.ndjson`, edit the `value`s, then
`pipeline dlq redrive --replace fix.ndjson`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Final

import orjson
import typer
from rich.table import Table

from pipeline import dlq
from pipeline.cli.common import CliError, console, run, settings
from pipeline.config import Settings
from pipeline.dlq import RedriveError, Selection, StoredLetter

dlq_app = typer.Typer(help="Inspect and re-drive dead letters.", no_args_is_help=True)

FromOffset = Annotated[
    int | None, typer.Option("--from-offset", min=0, help="First DLQ offset (inclusive).")
]
ToOffset = Annotated[
    int | None, typer.Option("--to-offset", min=0, help="Last DLQ offset (inclusive).")
]
Reason = Annotated[
    str | None, typer.Option("--reason", help=f"Error code: {', '.join(dlq.REASONS)}.")
]
Partition = Annotated[int | None, typer.Option("--partition", min=0, help="DLQ partition only.")]


def _selection(
    from_offset: int | None, to_offset: int | None, reason: str | None, partition: int | None
) -> Selection:
    try:
        return Selection(from_offset, to_offset, reason, partition)
    except RedriveError as exc:
        raise CliError(str(exc)) from None


def _read(config: Settings, selection: Selection) -> list[StoredLetter]:
    try:
        return run(dlq.read_letters(config.kafka, config.topic.dlq, selection))
    except RedriveError as exc:
        raise CliError(str(exc)) from None


WIDE: Final = 120
"""Below this many columns the table leaves out task and original (`--json` has them)."""


def _table(letters: list[StoredLetter], title: str, width: int) -> Table:
    """Letters as rows. Place and reason are never shortened (they are what a user selects
    by), the message wraps at word breaks, and a narrow terminal drops the last columns."""
    table = Table(title=title, title_justify="left")
    table.add_column("at", no_wrap=True)
    table.add_column("reason", no_wrap=True)
    table.add_column("message", ratio=1)
    table.add_column("source", no_wrap=True)
    wide = width >= WIDE
    if wide:
        table.add_column("task", overflow="fold", max_width=40)
        table.add_column("original", no_wrap=True, overflow="ellipsis", max_width=40)
    for stored in letters:
        source = stored.letter["source"]
        row = [
            _place(stored),
            stored.reason,
            stored.letter["error"]["message"],
            f"{source['topic']} {source['partition']}:{source['offset']}",
        ]
        if wide:
            task = stored.letter["task_key"]
            row.append("/".join(str(v) for v in task.values()) if task else "-")
            row.append(dlq.preview(stored.original[1], 40))
        table.add_row(*row)
    return table


def _place(stored: StoredLetter) -> str:
    return f"{stored.partition}:{stored.offset}"


@dlq_app.command("list")
def list_letters(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--max", min=1, help="Show at most N letters.")] = 50,
    reason: Reason = None,
    partition: Partition = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per letter (editable for --replace).")
    ] = False,
) -> None:
    """Show dead letters: where (partition:offset), why, where from, and the original."""
    config = settings(ctx)
    letters = _read(config, _selection(from_offset, to_offset, reason, partition))
    shown = letters[:limit]
    if as_json:
        for stored in shown:
            print(orjson.dumps(dlq.letter_json(stored)).decode())
        return
    if not letters:
        console.print(f"no dead letters in {config.topic.dlq} match")
        return
    title = f"{config.topic.dlq}: {len(letters)} dead letter(s)"
    console.print(_table(shown, title, console.width))
    if len(letters) > limit:
        console.print(f"{len(letters) - limit} more not shown (--max, or narrow the selection)")


@dlq_app.command("redrive")
def redrive(
    ctx: typer.Context,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    reason: Reason = None,
    partition: Partition = None,
    replace: Annotated[
        Path | None,
        typer.Option(
            "--replace",
            help="NDJSON from `dlq list --json`, edited: re-drive those letters' values.",
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Select every dead letter (no other selector needed).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be re-published; publish nothing.")
    ] = False,
) -> None:
    """Re-publish selected dead letters to their source topic (original key and bytes)."""
    config = settings(ctx)
    selection = _selection(from_offset, to_offset, reason, partition)
    if selection.is_everything and replace is None and not everything:
        raise CliError(
            "select letters with --from-offset/--to-offset, --reason, --partition or --replace "
            "(or --all)"
        )
    replaced = _replacements(replace) if replace else None
    letters = _read(config, selection)
    if replaced is not None:
        letters = [s for s in letters if (s.partition, s.offset) in replaced]
    try:
        out = dlq.redrive_messages(
            letters,
            replaced,
            validate_topic=config.topic.requests,
            max_bytes=config.kafka.max_message_bytes,
        )
    except RedriveError as exc:
        raise CliError(str(exc)) from None
    if not out:
        console.print(f"nothing to re-drive: no dead letter in {config.topic.dlq} matches")
        return
    per_topic = ", ".join(f"{n} to {topic}" for topic, n in Counter(m[0] for m in out).items())
    if dry_run:
        console.print(_table(letters, "would re-drive", console.width))
        console.print(f"dry run: would re-publish {len(out)} dead letter(s): {per_topic}")
        return
    run(dlq.publish(config.kafka, out))
    edited = f" ({len(replaced)} replaced)" if replaced else ""
    console.print(f"re-published {len(out)} dead letter(s){edited}: {per_topic}")


def _replacements(path: Path) -> dict[tuple[int, int], object]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return dlq.replacements(text.splitlines(), str(path))
    except RedriveError as exc:
        raise CliError(str(exc)) from None
