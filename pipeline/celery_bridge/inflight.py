"""The monitor's in-flight set, rebuilt from `tasks.events` and committed as a low-water mark.

The monitor learns which Celery tasks exist from the dispatcher's `launched` events and forgets
them once a terminal event for them was published. Its consumer offsets are committed no further
than the oldest `launched` event still in flight on each partition, so a restarted (or newly
assigned) monitor re-reads exactly what it needs to rebuild the set: nothing is lost, and what
is read twice only re-announces events with the same ids. No I/O here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import TopicPartition

from pipeline.messages import TERMINAL_STATES, State, TaskEvent, TaskKey, parse_time


@dataclass
class InFlight:
    """One Celery task the monitor still watches, and where its `launched` event sits."""

    key: TaskKey
    task_id: str
    sent_at: float
    tp: TopicPartition
    offset: int
    running_reported: bool = False
    running_since: float | None = None
    """When this monitor first saw it running (not kept across restarts)."""
    cancelled_at: float | None = None
    """When the dispatcher's `cancelled` ended it: the monitor reports nothing more, but
    still waits for the worker's completion record to keep what the command printed."""


class InFlightSet:
    def __init__(self, dispatcher_source: str, monitor_source: str) -> None:
        self.dispatcher_source = dispatcher_source
        self.monitor_source = monitor_source
        self.tasks: dict[str, InFlight] = {}
        self.read_to: dict[TopicPartition, int] = {}

    def __len__(self) -> int:
        return len(self.tasks)

    def passed(self, tp: TopicPartition, offset: int) -> None:
        """A record at `offset` was read (whatever it held)."""
        self.read_to[tp] = max(self.read_to.get(tp, 0), offset + 1)

    def learn(self, tp: TopicPartition, offset: int, event: TaskEvent) -> None:
        """Fold one event in: a dispatcher `launched` adds, any terminal for the task removes."""
        self.passed(tp, offset)
        task_id = event.get("celery_task_id")
        launched = event["state"] == State.LAUNCHED and event["source"] == self.dispatcher_source
        if task_id and launched and task_id not in self.tasks:
            sent_at = _epoch(event["observed_at"])
            self.tasks[task_id] = InFlight(
                TaskKey.from_wire(event["key"]), task_id, sent_at, tp, offset
            )
        self.apply(event)

    def apply(self, event: TaskEvent) -> None:
        """What an event says about a watched task: terminal ends it (another stage's cancel
        only marks it, see `cancelled_at`), the monitor's running means it need not be
        reported again."""
        entry = self.tasks.get(event.get("celery_task_id", ""))
        if entry is None:
            return
        state = State(event["state"])
        if state == State.CANCELLED and event["source"] != self.monitor_source:
            entry.cancelled_at = entry.cancelled_at or time.time()
        elif state in TERMINAL_STATES:
            del self.tasks[entry.task_id]
        elif state == State.RUNNING and event["source"] == self.monitor_source:
            entry.running_reported = True

    def drop_partitions(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions went to another monitor: it takes over their tasks from the commit."""
        gone = set(partitions)
        self.tasks = {t: e for t, e in self.tasks.items() if e.tp not in gone}
        self.read_to = {tp: o for tp, o in self.read_to.items() if tp not in gone}

    def commit_offsets(self) -> dict[TopicPartition, int]:
        """Per partition: the oldest in-flight `launched` offset, else everything read."""
        offsets = dict(self.read_to)
        for entry in self.tasks.values():
            offsets[entry.tp] = min(offsets.get(entry.tp, entry.offset), entry.offset)
        return offsets


def mentions_celery_task(raw: bytes | None) -> bool:
    """Whether an event can be about a watched task: only one with a `celery_task_id` is,
    and most of the topic (every Kubernetes task's events) has none, so this byte test
    spares the monitor parsing them."""
    return raw is not None and b'"celery_task_id"' in raw


def _epoch(timestamp: str) -> float:
    return parse_time(timestamp).timestamp()
