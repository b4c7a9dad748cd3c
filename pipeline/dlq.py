"""Dead letters after the fact: read them back, pick some, and re-drive them to their source.

A DeadLetter keeps the exact original key and bytes, so re-driving publishes precisely what
the producer sent once it (or the routing table) is fixed; an edited replacement may stand
in for the original instead. Selection, previews and replacements are pure; the two Kafka
edges (`read_letters`, `publish`) are thin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import messages
from pipeline.config import KafkaSettings
from pipeline.kafka import make_consumer, make_producer, send_all, started
from pipeline.messages import DeadLetter, ErrorCode, InvalidMessage, Kind, TaskKey

Message = tuple[str, bytes | None, bytes]
REASONS = tuple(code.value for code in ErrorCode)


class RedriveError(ValueError):
    """A selection or replacement that cannot be used; nothing has been published."""


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A DeadLetter and where it sits in the DLQ topic (the coordinates users select by)."""

    partition: int
    offset: int
    letter: DeadLetter

    @property
    def reason(self) -> str:
        return self.letter["error"]["code"]

    @property
    def source_topic(self) -> str:
        topic: str = self.letter["source"]["topic"]
        return topic

    @property
    def original(self) -> tuple[bytes | None, bytes]:
        return messages.dead_letter_original(self.letter)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which letters: an inclusive DLQ offset range, a reason code, a partition (all optional)."""

    from_offset: int | None = None
    to_offset: int | None = None
    reason: str | None = None
    partition: int | None = None

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in REASONS:
            raise RedriveError(f"unknown reason {self.reason!r}; one of: {', '.join(REASONS)}")
        low, high = self.from_offset, self.to_offset
        if low is not None and high is not None and low > high:
            raise RedriveError(
                f"--from-offset {self.from_offset} is after --to-offset {self.to_offset}"
            )

    @property
    def is_everything(self) -> bool:
        return self == Selection()

    def matches(self, stored: StoredLetter) -> bool:
        return (
            (self.partition is None or stored.partition == self.partition)
            and (self.from_offset is None or stored.offset >= self.from_offset)
            and (self.to_offset is None or stored.offset <= self.to_offset)
            and (self.reason is None or stored.reason == self.reason)
        )


def preview(raw: bytes, width: int = 60) -> str:
    """One line of the original for a table: control characters escaped, long text cut."""
    text = raw[: width * 4].decode("utf-8", errors="backslashreplace")
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return shown if len(shown) <= width and len(raw) <= width * 4 else shown[: width - 1] + "…"


def letter_json(stored: StoredLetter) -> dict[str, Any]:
    """The letter with its DLQ coordinates and an editable copy of the original.

    `value` is the original parsed when it is JSON, else `value_text` holds it as text; a
    line of this, edited, is what `replacements` reads back.
    """
    shown: dict[str, Any] = {"partition": stored.partition, "offset": stored.offset}
    shown.update(stored.letter)
    raw = stored.original[1]
    try:
        shown["value"] = orjson.loads(raw)
    except orjson.JSONDecodeError:
        shown["value_text"] = raw.decode("utf-8", errors="replace")
    return shown


def replacements(lines: Iterable[str], where: str) -> dict[tuple[int, int], Any]:
    """`(partition, offset) -> edited value` from NDJSON lines shaped like `letter_json`."""
    found: dict[tuple[int, int], Any] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise RedriveError(f"{where}:{number}: not valid JSON: {exc}") from None
        if not isinstance(entry, dict) or not all(
            type(entry.get(k)) is int for k in ("partition", "offset")
        ):
            raise RedriveError(f"{where}:{number}: needs integer 'partition' and 'offset'")
        if "value" in entry:
            value: Any = entry["value"]
        elif isinstance(entry.get("value_text"), str):
            value = entry["value_text"].encode()
        else:
            raise RedriveError(f"{where}:{number}: needs 'value' (JSON) or 'value_text'")
        found[(entry["partition"], entry["offset"])] = value
    if not found:
        raise RedriveError(f"{where} names no dead letters")
    return found


def redrive_messages(
    letters: Sequence[StoredLetter],
    replaced: dict[tuple[int, int], Any] | None = None,
    *,
    validate_topic: str | None = None,
    max_bytes: int | None = None,
) -> list[Message]:
    """What re-driving `letters` publishes: each to its source topic, in DLQ order.

    A letter without a replacement, or whose replacement parses to the same JSON, goes back
    byte for byte under its original key. An edited one is encoded and, when it goes to
    `validate_topic` (the requests topic), must be a valid request, whose task key then
    becomes the message key.
    """
    replaced = replaced or {}
    by_place = {(s.partition, s.offset): s for s in letters}
    if missing := [place for place in replaced if place not in by_place]:
        partition, offset = missing[0]
        raise RedriveError(
            f"no dead letter at partition {partition} offset {offset} matches the selection"
        )
    out: list[Message] = []
    for stored in sorted(letters, key=lambda s: (s.partition, s.offset)):
        key, value = stored.original
        place = (stored.partition, stored.offset)
        if "truncated" in stored.letter and place not in replaced:
            raise RedriveError(
                f"the letter at partition {place[0]} offset {place[1]} holds only a prefix of "
                "its original (it was too big to keep); re-drive it with a replacement"
            )
        edited = _replacement_bytes(value, replaced[place]) if place in replaced else value
        if edited != value:
            value = edited
            if stored.source_topic == validate_topic:
                key = _checked_key(value, place, max_bytes)
        out.append((stored.source_topic, key, value))
    return out


def _replacement_bytes(original: bytes, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        if orjson.loads(original) == value:
            return original
    except orjson.JSONDecodeError:
        pass
    return messages.encode(value)


def _checked_key(value: bytes, place: tuple[int, int], max_bytes: int | None) -> bytes:
    try:
        request = messages.decode_request(value, max_bytes=max_bytes)
    except InvalidMessage as exc:
        partition, offset = place
        raise RedriveError(
            f"replacement for partition {partition} offset {offset} is not a valid request: "
            f"{exc.message}"
        ) from None
    return TaskKey.from_wire(request["key"]).partition_key


# -- Kafka edges -------------------------------------------------------------------------------


async def read_letters(
    kafka: KafkaSettings, topic: str, selection: Selection, *, idle_ms: int = 300
) -> list[StoredLetter]:
    """Every matching letter up to the fetch high-water mark, in (partition, offset) order.

    Seeks to `from_offset` where given; anything read outside the selection is dropped here.
    """
    consumer = make_consumer(kafka, group_id=None, client_id="dlq")
    found: list[StoredLetter] = []
    async with started(consumer, kafka):
        partitions = await _partitions(consumer, topic, selection.partition)
        consumer.assign(partitions)
        for tp in partitions:
            if selection.from_offset is not None:
                consumer.seek(tp, selection.from_offset)
        pending = set(partitions)
        async with asyncio.timeout(60):
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=idle_ms)
                for records in batch.values():
                    for record in records:
                        stored = stored_letter(record.partition, record.offset, record.value)
                        if stored is not None and selection.matches(stored):
                            found.append(stored)
                pending = {tp for tp in pending if not await _caught_up(consumer, tp, selection)}
    return sorted(found, key=lambda s: (s.partition, s.offset))


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, only: int | None
) -> list[TopicPartition]:
    await consumer.topics()  # refreshes the cluster metadata
    ids = consumer.partitions_for_topic(topic)
    if not ids:
        raise RedriveError(f"topic {topic} does not exist (pipeline topics create)")
    if only is not None and only not in ids:
        raise RedriveError(f"topic {topic} has no partition {only} (it has 0..{max(ids)})")
    return [TopicPartition(topic, p) for p in sorted(ids) if only in (None, p)]


async def _caught_up(consumer: AIOKafkaConsumer, tp: TopicPartition, selection: Selection) -> bool:
    highwater = consumer.highwater(tp)
    if highwater is None:
        return False
    position: int = await consumer.position(tp)
    past_range = selection.to_offset is not None and position > selection.to_offset
    return position >= highwater or past_range


def stored_letter(partition: int, offset: int, raw: bytes | None) -> StoredLetter | None:
    """A letter from the DLQ topic; something else written there is skipped, not fatal."""
    try:
        letter: DeadLetter = messages.decode(Kind.DEAD_LETTER, raw or b"")
    except InvalidMessage:
        return None
    return StoredLetter(partition, offset, letter)


async def publish(kafka: KafkaSettings, out: Sequence[Message]) -> None:
    """Send the re-driven messages and wait for every ack."""
    async with started(make_producer(kafka, "dlq-redrive"), kafka) as producer:
        await send_all(producer, out)
