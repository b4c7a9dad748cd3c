"""The Celery app built from settings, and the task identity every part of the path agrees on.

Delivery choices, and why:
- `task_acks_late` + `task_reject_on_worker_lost`: a task is acknowledged only after its
  command finished, and a worker process that dies mid-task (SIGKILL, OOM) gets its message
  back on the queue instead of silently acknowledged, so a lost task is re-run, never stuck.
- Redis `visibility_timeout`: a message taken by a worker that vanished entirely is handed out
  again after this long; it must outlast the execution timeout, or a long command would be
  handed to a second worker while the first still runs (settings enforce that).
- Redis `unacked_mutex_expire`: workers take turns sweeping for such messages under a lock in
  Redis, and a worker killed inside a sweep keeps the lock until it expires (kombu: 5 minutes),
  holding up every redelivery on the broker that long. It expires after one restore interval
  instead; sweeps that overlap then are safe, as each restore is a Redis transaction.
- The filesystem transport (`filesystem://`, for a machine with no server at all) has no
  visibility timeout: taking a message moves its file out of the queue folder, and from then
  on the message lives only in the worker's memory. A pool process that dies is still covered
  (the worker rejects the message back into the folder), and a worker stopped with SIGTERM
  puts back what it had not acknowledged; a worker killed outright loses what it held. The
  monitor covers that: a lost message that never started is re-sent as a stalled task, and a
  task left "started" by a vanished worker is re-sent once it has run for longer than
  `visibility_timeout_s` (see `monitor`).
- `task_track_started`: STARTED is stored, so the monitor can tell "running" from "waiting in
  the queue" and spot stalled tasks.
- `worker_prefetch_multiplier=1`: a worker reserves no more than it can run, so a crash
  strands as few messages as possible and queues stay fair across workers.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Final

import orjson
from celery import Celery

from pipeline.celery_bridge import fs_transport
from pipeline.celery_bridge.ledger import Ledger
from pipeline.celery_bridge.ledger_redis import RedisLedger
from pipeline.celery_bridge.ledger_sql import SqlLedger
from pipeline.config import CelerySettings
from pipeline.messages import TaskKey

TASK_NAME: Final = "pipeline.run_command"

_TASK_ID_NAMESPACE: Final = uuid.UUID("5b0c3f52-6a53-4f0e-9a53-1f3c2d7e9b41")


def task_id_for(key: TaskKey) -> str:
    """The Celery task id of one try of one task: a duplicate request maps to the same id."""
    material = orjson.dumps(list(key.to_wire().values())).decode()
    return str(uuid.uuid5(_TASK_ID_NAMESPACE, material))


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+socket://"))


def transport_options(celery: CelerySettings, *, fail_fast: bool = False) -> dict[str, Any]:
    """kombu transport options for the configured broker: defaults, then the configured ones."""
    url = celery.broker_url.get_secret_value()
    options: dict[str, Any] = {}
    if is_redis(url):
        options = {
            "visibility_timeout": celery.visibility_timeout_s,
            "unacked_restore_interval": celery.unacked_restore_interval_s,
            "unacked_mutex_expire": max(1, round(celery.unacked_restore_interval_s)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
        }
    elif url.startswith("filesystem:"):
        folder = celery.broker_transport_options["data_folder_in"]
        # kombu's default control folder is relative to the working directory: every process
        # must see the same exchange tables (routing, broadcast), so keep them with the queue
        options = {"control_folder": os.path.join(folder, "control"), "polling_interval": 0.1}
    options |= celery.broker_transport_options
    if fail_fast:
        options["max_retries"] = 0
    return options


def _prepare_filesystem(options: dict[str, Any]) -> None:
    """The filesystem transport expects its folders to exist."""
    keys = ["data_folder_in", "data_folder_out", "control_folder"]
    if options.get("store_processed"):
        keys.append("processed_folder")
    for key in keys:
        if key in options:
            Path(options[key]).mkdir(parents=True, exist_ok=True)


def backend_options(celery: CelerySettings) -> dict[str, Any]:
    """SQLite waits for another process's write (30 s) instead of failing at once."""
    if celery.result_backend.get_secret_value().startswith("db+sqlite:"):
        engine = {"pool_pre_ping": True, "pool_recycle": 3600, "connect_args": {"timeout": 30}}
        return {"database_engine_options": engine}
    return {}


def make_app(celery: CelerySettings, *, fail_fast: bool = False) -> Celery:
    """A Celery app for dispatcher, monitor and workers alike (nothing connects until used).

    `fail_fast` is for callers that retry connection errors themselves (the dispatcher and
    monitor): kombu then reports an unreachable broker at once instead of retrying inside.
    """
    transport = transport_options(celery, fail_fast=fail_fast)
    filesystem = celery.broker_url.get_secret_value().startswith("filesystem:")
    if filesystem:
        _prepare_filesystem(transport)
    app = Celery(
        "pipeline",
        broker=celery.broker_url.get_secret_value(),
        backend=celery.result_backend.get_secret_value(),
        set_as_current=False,
    )
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_concurrency=celery.worker_concurrency,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
        broker_transport=fs_transport.PATH if filesystem else None,
        result_expires=int(celery.dispatch_record_ttl_s),
        worker_hijack_root_logger=False,
        **backend_options(celery),
    )
    return app


def make_ledger(app: Celery, celery: CelerySettings) -> Ledger:
    """The dispatch/completion ledger kept in `app`'s result backend, chosen by its URL."""
    url = celery.result_backend.get_secret_value()
    if is_redis(url):
        return RedisLedger(app.backend, celery.dispatch_record_ttl_s)
    if url.startswith("db+"):
        return SqlLedger(app.backend, celery.dispatch_record_ttl_s)
    raise ValueError(f"no ledger for result backend {url.split(':', 1)[0]}://")
