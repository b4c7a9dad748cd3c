"""Dispatch and completion records in Redis: why a duplicate request or delivery runs once.

A request can reach the dispatcher twice (a Kafka record re-delivered after a crash, or
published twice), and a Celery message can reach a worker twice (re-sent after a stall,
re-delivered after an acknowledgement was lost). Two records make both harmless:

- the *dispatch record*, claimed with an atomic `SET NX` before `send_task`: only the claimer
  sends; a later copy of the request finds `sent` (or `failed`) and just re-announces it. A
  claim left at `sending` means a dispatcher died mid-send, so the next copy sends again — the
  task id is the same, and the completion record absorbs a duplicate message if one exists.
  It also keeps the payload, so the monitor can re-send a stalled task.
- the *completion record*, written by the worker after the command ran: a second delivery of
  the same task id returns that result instead of running the command again.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import orjson


class DispatchRecord(TypedDict):
    status: Literal["sending", "sent", "failed"]
    queue: str
    payload: dict[str, Any]
    reason: str | None
    resends: int
    resent_at: float | None


class Ledger:
    """The records of one task path, kept next to Celery's results in the backend's Redis."""

    def __init__(self, client: Any, ttl_s: float, prefix: str = "pipeline-celery-") -> None:
        self.client = client
        self.ttl_ms = int(ttl_s * 1000)
        self.prefix = prefix

    def _dispatch_key(self, task_id: str) -> str:
        return f"{self.prefix}dispatch-{task_id}"

    def _completion_key(self, task_id: str) -> str:
        return f"{self.prefix}done-{task_id}"

    def claim(self, task_id: str, record: DispatchRecord) -> DispatchRecord | None:
        """Store `record` unless one exists; returns the existing record, None when claimed."""
        key = self._dispatch_key(task_id)
        if self.client.set(key, orjson.dumps(record), nx=True, px=self.ttl_ms):
            return None
        existing = self.dispatch(task_id)
        if existing is None:  # expired between the two calls: claim again
            return self.claim(task_id, record)
        return existing

    def dispatch(self, task_id: str) -> DispatchRecord | None:
        raw = self.client.get(self._dispatch_key(task_id))
        return None if raw is None else _loads_record(raw)

    def dispatches(self, task_ids: list[str]) -> list[DispatchRecord | None]:
        """Many dispatch records in one round trip."""
        raws = self.client.mget([self._dispatch_key(t) for t in task_ids]) if task_ids else []
        return [None if raw is None else _loads_record(raw) for raw in raws]

    def update(self, task_id: str, record: DispatchRecord) -> None:
        self.client.set(self._dispatch_key(task_id), orjson.dumps(record), px=self.ttl_ms)

    def completed(self, task_id: str) -> dict[str, Any] | None:
        raw = self.client.get(self._completion_key(task_id))
        if raw is None:
            return None
        result: dict[str, Any] = orjson.loads(raw)
        return result

    def complete(self, task_id: str, result: dict[str, Any]) -> None:
        self.client.set(self._completion_key(task_id), orjson.dumps(result), px=self.ttl_ms)


def _loads_record(raw: bytes) -> DispatchRecord:
    record: DispatchRecord = orjson.loads(raw)
    return record
