"""The reducer table's storage: every state kept as its JSON, decoded when it is read.

The table holds every try's state for the retention (`pipeline.reducer.retention`, 7 days by
default), and a decoded state (its dicts, lists and strings) took ~3.8 kB of memory where its
JSON takes ~1.1 kB. So the store keeps the bytes the fold already wrote to the changelog (or
that recovery read from it) and decodes a state only when something reads it: the fold, for a
key not touched in the same fetch, and the API for the states it answers with. A finished
state is held deflated (`pipeline.reducer.packing`), ~250 bytes: a try's state is packed once,
when it finishes, and the live ones the fold reads stay plain JSON. Faust's
in-memory store is kept for the rest (recovery bookkeeping, rebalance cleanup); it is
registered as `encoded://` through faust's `faust.stores` entry point.

An `Observer` (the listing, `pipeline.reducer.listing.Arrivals`) hears of every state kept,
recovered or forgotten, so its index never needs the table decoded to stay current.

Recovery keeps a changelog record only if it is a valid state of the try its key names: the
state topic is a topic like any other, and a record nobody checked would be found only when
read (an API error for that task, its events refused). One that is not keeps the key's state
as it was, and is counted and logged with its offset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Set
from typing import Any, Protocol

import orjson
import prometheus_client
from faust.stores import memory
from faust.types import TP, EventT

from pipeline.messages import ErrorCode, InvalidMessage, Kind, decode, right_sized
from pipeline.reducer.fold import TaskState, is_terminal, state_key
from pipeline.reducer.packing import pack, unpack

log = logging.getLogger(__name__)

REJECTED = prometheus_client.Counter(
    "pipeline_reducer_changelog_rejected_total",
    "State records recovery refused: not a valid state of the try their key names.",
)


class EncodedStates(MutableMapping[bytes, TaskState]):
    """State key -> state, held as JSON bytes (packed once finished); each read decodes a
    fresh dict."""

    def __init__(self) -> None:
        self._raw: dict[bytes, bytes] = {}

    def __getitem__(self, key: bytes) -> TaskState:
        state: TaskState = orjson.loads(unpack(self._raw[key]))
        return state

    def __setitem__(self, key: bytes, state: TaskState) -> None:
        self.put_encoded(key, orjson.dumps(state), finished=is_terminal(state["state"]))

    def put_encoded(self, key: bytes, value: bytes, *, finished: bool) -> None:
        """Keep a state already encoded (as written to, or read from, the changelog);
        `finished` says it is terminal, so it is held packed."""
        self._raw[key] = pack(value) if finished else right_sized(value)

    def __delitem__(self, key: bytes) -> None:
        del self._raw[key]

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def clear(self) -> None:
        self._raw.clear()


class Observer(Protocol):
    """What keeps an index of the table current as the store changes."""

    def put(self, key: bytes, state: TaskState) -> None: ...

    def recovered(self, key: bytes, state: TaskState) -> None: ...

    def forget(self, key: bytes) -> None: ...

    def recovery_completed(self) -> None: ...


class EncodedStore(memory.Store[bytes, TaskState]):  # type: ignore[misc]
    """Faust's in-memory store over `EncodedStates`; recovery keeps the changelog's bytes."""

    data: EncodedStates
    observer: Observer | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data = EncodedStates()

    def put_encoded(self, key: bytes, state: TaskState, value: bytes, partition: int) -> None:
        """Keep `state`, encoded as `value`, that the fold wrote to `partition` of the
        changelog. Its partition is kept too (faust's own writes skip it), so a rebalance
        that moves the partition away drops the state here, and a tombstone for it goes
        where the state went."""
        self.data.put_encoded(key, value, finished=is_terminal(state["state"]))
        self._key_partition[key] = partition
        if self.observer is not None:
            self.observer.put(key, state)

    def partition_of(self, key: bytes) -> int | None:
        return self._key_partition.get(key)

    def forget(self, key: bytes) -> None:
        if key in self.data:  # `del`, not `pop`: a pop would decode the state it drops
            del self.data[key]
        self._key_partition.pop(key, None)
        if self.observer is not None:
            self.observer.forget(key)

    def _clear(self) -> None:
        for key in list(self.data):
            self.forget(key)

    async def on_recovery_completed(self, active_tps: Set[TP], standby_tps: Set[TP]) -> None:
        """Drop the states of partitions no longer this replica's (as faust's memory store
        does, without decoding them), then tell the observer recovery is done."""
        assigned = {partition for _, partition in active_tps}
        for key in [k for k, p in self._key_partition.items() if p not in assigned]:
            self.forget(key)
        if self.observer is not None:
            self.observer.recovery_completed()

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        """Apply changelog records in order: a valid state is kept as it came, None deletes,
        anything else is refused (counted and logged; the key keeps what it had)."""
        for event in batch:
            key = to_key(event.key)
            value = event.message.value
            if value is None:
                self.forget(key)
                continue
            try:
                state = _state_of(key, value)
            except InvalidMessage as exc:
                REJECTED.inc()
                where = {"partition": event.message.partition, "offset": event.message.offset}
                log.warning("state record refused at recovery: %s", exc, extra=where)
                continue
            self._key_partition[key] = event.message.partition
            self.data.put_encoded(key, value, finished=is_terminal(state["state"]))
            if self.observer is not None:
                self.observer.recovered(key, state)


def _state_of(key: bytes, value: bytes) -> TaskState:
    """`value` decoded, when it is a state of the try `key` names; InvalidMessage says why
    it is not."""
    # its size was the broker's to bound: any record it took is read
    state: TaskState = decode(Kind.TASK_STATE, value, max_bytes=len(value))
    if state_key(state["key"]) != key:
        raise InvalidMessage(ErrorCode.SCHEMA, "its state belongs to another try than its key")
    return state
