"""The ledger in Redis, next to Celery's results: `SET NX` claims, `MGET` bulk reads.

Records are JSON values under prefixed keys with a TTL; see `ledger` for what they are for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from pipeline.celery_bridge.ledger import DispatchRecord, RunRecord
from pipeline.tasklogs import capture_key


class RedisLedger:
    """The records of one task path, kept next to Celery's results in the backend's Redis."""

    def __init__(self, backend: Any, ttl_s: float, prefix: str = "pipeline-celery-") -> None:
        self.backend = backend
        self.client = backend.client
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

    def update(self, task_id: str, record: DispatchRecord) -> None:
        self.client.set(self._dispatch_key(task_id), orjson.dumps(record), px=self.ttl_ms)

    def begin_run(self, task_id: str, run: RunRecord) -> RunRecord | None:
        key = f"{self.prefix}run-{task_id}"
        while not self.client.set(key, orjson.dumps(run), nx=True, px=self.ttl_ms):
            raw = self.client.get(key)
            if raw is not None:  # else it expired between the two calls: claim again
                existing: RunRecord = orjson.loads(raw)
                return existing
        return None

    def replace_run(self, task_id: str, run: RunRecord) -> None:
        self.client.set(f"{self.prefix}run-{task_id}", orjson.dumps(run), px=self.ttl_ms)

    def completed(self, task_id: str) -> dict[str, Any] | None:
        return self.completions([task_id])[task_id]

    def completions(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        raws = self.client.mget([self._completion_key(t) for t in task_ids]) if task_ids else []
        return {t: None if raw is None else orjson.loads(raw)
                for t, raw in zip(task_ids, raws, strict=True)}  # fmt: skip

    def complete(self, task_id: str, result: dict[str, Any]) -> None:
        self.client.set(self._completion_key(task_id), orjson.dumps(result), px=self.ttl_ms)

    def keep_output(self, task_id: str, data: bytes) -> None:
        """The running command's capture so far, where a followed log reads it."""
        self.client.set(capture_key(task_id), data, px=self.ttl_ms)

    def states(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Backend entries for many tasks in one MGET (None where no entry exists yet)."""
        backend = self.backend
        values = backend.mget([backend.get_key_for_task(task_id) for task_id in task_ids])
        return {
            task_id: backend.decode_result(value) if value else None
            for task_id, value in zip(task_ids, values, strict=True)
        }


def _loads_record(raw: bytes) -> DispatchRecord:
    record: DispatchRecord = orjson.loads(raw)
    return record
