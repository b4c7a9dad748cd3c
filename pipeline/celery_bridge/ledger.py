"""Dispatch and completion records, and bulk task states: why a duplicate runs once.

A request can reach the dispatcher twice (a Kafka record re-delivered after a crash, or
published twice), and a Celery message can reach a worker twice (re-sent after a stall,
re-delivered after an acknowledgement was lost). Two records make both harmless:

- the *dispatch record*, claimed atomically before `send_task`: only the claimer sends; a
  later copy of the request finds `sent` (or `failed`) and just re-announces it. A claim left
  at `sending` means a dispatcher died mid-send, so the next copy sends again — the task id is
  the same, and the completion record absorbs a duplicate message if one exists. It also
  keeps the payload, so the monitor can re-send a stalled task.
- the *run record*, claimed atomically by the worker process about to start the command: a
  second delivery while it exists never starts the command too (see `worker` for what it
  does instead, and for a run record whose worker died);
- the *completion record*, written by the worker after the command ran: a second delivery of
  the same task id returns that result instead of running the command again. It also holds
  the command's bounded output, which the monitor publishes to the logs topic.

A cancel turns the dispatch record to `cancelled` (or claims one so, when the request has not
arrived yet): the dispatcher then never sends the request, and a worker that receives the
task anyway (a copy already queued, a worker that missed the revoke) does not run it.

Both live next to Celery's results, in the result backend's own store, so the path needs no
other server; `states` reads many tasks' result entries in one round trip for the monitor.
The store follows the result backend URL (`app.make_ledger`): Redis, or SQL (`db+sqlite://`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from pipeline.messages import CancelInfo


class DispatchRecord(TypedDict):
    status: Literal["sending", "sent", "failed", "cancelled"]
    queue: str
    payload: dict[str, Any]
    reason: str | None
    resends: int
    resent_at: float | None
    cancel: NotRequired[CancelInfo]


class RunRecord(TypedDict):
    """Who started a command: host and pid of the worker process, and when.

    `pid_started` is the process's start time in clock ticks since boot (Linux), so a pid that
    a later process reuses is not taken for the worker; records without it predate the field.
    """

    host: str
    pid: int
    started_at: float
    pid_started: NotRequired[int | None]


class Ledger(Protocol):
    """The records of one task path, and bulk reads of Celery's result entries."""

    def claim(self, task_id: str, record: DispatchRecord) -> DispatchRecord | None:
        """Store `record` unless a live one exists; returns that one, None when claimed."""
        ...

    def dispatch(self, task_id: str) -> DispatchRecord | None: ...

    def update(self, task_id: str, record: DispatchRecord) -> None: ...

    def begin_run(self, task_id: str, run: RunRecord) -> RunRecord | None:
        """Claim the run of `task_id`; returns the existing claim, None when claimed."""
        ...

    def replace_run(self, task_id: str, run: RunRecord) -> None: ...

    def completed(self, task_id: str) -> dict[str, Any] | None: ...

    def completions(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Completion records of many tasks in one round trip; None where there is none."""
        ...

    def complete(self, task_id: str, result: dict[str, Any]) -> None: ...

    def keep_output(self, task_id: str, data: bytes) -> None:
        """Store a running command's capture so far (a no-op where there is no live copy)."""
        ...

    def states(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Decoded result entries (`status`, `result`, ...) in one round trip; None where a
        task has none yet."""
        ...
