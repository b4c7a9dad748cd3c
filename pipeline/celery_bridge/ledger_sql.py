"""The ledger in SQLite, next to Celery's `celery_taskmeta` table: for a machine with no server.

Records are JSON values in one table keyed like the Redis ledger's keys, each with an expiry
time. A claim is one atomic upsert: insert, or take over a row whose time has passed
(`INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE expires_at <= now`); a live row is left
alone and the claimer learns from the row count. Reads ignore expired rows, and each process
deletes them once when it first uses the table, so expiry needs no sweeper.

Several processes share the file (dispatcher, monitor, worker processes): connections run in
WAL mode (readers never block the writer) and wait up to 30 s for a write lock instead of
failing; none is kept open, so a worker's forked pool processes never share one.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateTable

from pipeline.celery_bridge.ledger import DispatchRecord, RunRecord

BUSY_TIMEOUT_MS: Final = 30_000

METADATA = sa.MetaData()
RECORDS = sa.Table(
    "pipeline_celery_ledger",
    METADATA,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


def sqlite_engine(url: str) -> sa.Engine:
    """An engine whose every connection waits for locks and uses the write-ahead log."""
    engine = sa.create_engine(url, poolclass=NullPool)
    if engine.dialect.name != "sqlite":
        raise ValueError(f"the SQL ledger supports SQLite only, not {engine.dialect.name}")

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.close()

    return engine


def _use_wal(cursor: Any) -> None:
    """Put the file in WAL mode (it stays so), waiting out others who hold it.

    Switching needs the file to itself and SQLite does not wait for that (the busy timeout
    does not apply), so processes opening a new file together would fail: retry instead.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        with contextlib.suppress(sqlite3.OperationalError):  # locked: try again
            if cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                return
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("could not put the ledger file in WAL mode")
        time.sleep(0.01)


class SqlLedger:
    """The records of one task path, in the result backend's SQLite file."""

    def __init__(self, backend: Any, ttl_s: float) -> None:
        self.backend = backend
        self.ttl_s = ttl_s
        self.engine = sqlite_engine(backend.url)
        self._prepared = False

    def _prepare(self) -> None:
        """Create the tables (ours and Celery's, so states can be read before any result)."""
        if self._prepared:
            return
        self.backend.session_manager.prepare_models(self.engine)
        with self.engine.begin() as conn:
            conn.execute(CreateTable(RECORDS, if_not_exists=True))
            conn.execute(sa.delete(RECORDS).where(RECORDS.c.expires_at <= time.time()))
        self._prepared = True

    def _get(self, key: str) -> bytes | None:
        return self._get_many([key]).get(key)

    def _get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The live values of these keys, in one SELECT (missing and expired ones left out)."""
        self._prepare()
        if not keys:
            return {}
        query = sa.select(RECORDS.c.key, RECORDS.c.value).where(
            RECORDS.c.key.in_(list(keys)), RECORDS.c.expires_at > time.time()
        )
        with self.engine.connect() as conn:
            return dict(conn.execute(query).tuples().all())

    def _upsert(self, key: str, value: bytes, *, only_over_expired: bool = False) -> sa.Insert:
        """Insert `key`, or overwrite its row (only an expired one, if asked)."""
        now = time.time()
        stmt = insert(RECORDS).values(key=key, value=value, expires_at=now + self.ttl_s)
        return stmt.on_conflict_do_update(
            index_elements=[RECORDS.c.key],
            set_={"value": stmt.excluded.value, "expires_at": stmt.excluded.expires_at},
            where=(RECORDS.c.expires_at <= now) if only_over_expired else None,
        )

    def _put(self, key: str, value: bytes) -> None:
        self._prepare()
        with self.engine.begin() as conn:
            conn.execute(self._upsert(key, value))

    def _claim(self, key: str, value: bytes) -> bytes | None:
        """Insert `key` unless a live row exists; returns that row's value, None when claimed."""
        self._prepare()
        stmt = self._upsert(key, value, only_over_expired=True)
        with self.engine.begin() as conn:  # one transaction: the row read is the one that won
            if conn.execute(stmt).rowcount == 1:
                return None
            existing = conn.execute(sa.select(RECORDS.c.value).where(RECORDS.c.key == key))
            found: bytes = existing.scalar_one()
        return found

    def claim(self, task_id: str, record: DispatchRecord) -> DispatchRecord | None:
        """Store `record` unless a live one exists; returns that one, None when claimed."""
        raw = self._claim(f"dispatch-{task_id}", orjson.dumps(record))
        if raw is None:
            return None
        found: DispatchRecord = orjson.loads(raw)
        return found

    def begin_run(self, task_id: str, run: RunRecord) -> RunRecord | None:
        raw = self._claim(f"run-{task_id}", orjson.dumps(run))
        if raw is None:
            return None
        found: RunRecord = orjson.loads(raw)
        return found

    def replace_run(self, task_id: str, run: RunRecord) -> None:
        self._put(f"run-{task_id}", orjson.dumps(run))

    def dispatch(self, task_id: str) -> DispatchRecord | None:
        raw = self._get(f"dispatch-{task_id}")
        if raw is None:
            return None
        record: DispatchRecord = orjson.loads(raw)
        return record

    def update(self, task_id: str, record: DispatchRecord) -> None:
        self._put(f"dispatch-{task_id}", orjson.dumps(record))

    def completed(self, task_id: str) -> dict[str, Any] | None:
        return self.completions([task_id])[task_id]

    def completions(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        keys = {f"done-{task_id}": task_id for task_id in task_ids}
        found = self._get_many(list(keys))
        return {t: None if (raw := found.get(k)) is None else orjson.loads(raw)
                for k, t in keys.items()}  # fmt: skip

    def complete(self, task_id: str, result: dict[str, Any]) -> None:
        self._put(f"done-{task_id}", orjson.dumps(result))

    def keep_output(self, task_id: str, data: bytes) -> None:
        """No live capture on SQL: a Celery log is served once the command finished."""

    def states(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Celery's entries for many tasks in one `SELECT ... IN`, decoded as Celery does
        (`meta_from_decoded` turns a stored exception back into one)."""
        self._prepare()
        table = self.backend.task_cls.__table__
        query = sa.select(
            table.c.task_id, table.c.status, table.c.result, table.c.traceback,
            table.c.date_done,
        ).where(table.c.task_id.in_(list(task_ids)))  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all() if task_ids else []
        found = {row["task_id"]: self._decoded(dict(row)) for row in rows}
        return {task_id: found.get(task_id) for task_id in task_ids}

    def _decoded(self, row: dict[str, Any]) -> dict[str, Any]:
        """Celery < 5.7 keeps `result` pickled (the column type unpickles it); 5.7 keeps
        the serializer's bytes, which the backend decodes."""
        if isinstance(row["result"], bytes | bytearray | memoryview):
            row["result"] = self.backend.decode(bytes(row["result"]))
        meta: dict[str, Any] = self.backend.meta_from_decoded(row)
        return meta
