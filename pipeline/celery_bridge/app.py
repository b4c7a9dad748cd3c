"""The Celery app built from settings, and the task identity every part of the path agrees on.

Delivery choices, and why:
- `task_acks_late` + `task_reject_on_worker_lost`: a task is acknowledged only after its
  command finished, and a worker process that dies mid-task (SIGKILL, OOM) gets its message
  back on the queue instead of silently acknowledged, so a lost task is re-run, never stuck.
- Redis `visibility_timeout`: a message taken by a worker that vanished entirely is handed out
  again after this long; it must outlast the execution timeout, or a long command would be
  handed to a second worker while the first still runs (settings enforce that).
- `task_track_started`: STARTED is stored, so the monitor can tell "running" from "waiting in
  the queue" and spot stalled tasks.
- `worker_prefetch_multiplier=1`: a worker reserves no more than it can run, so a crash
  strands as few messages as possible and queues stay fair across workers.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import orjson
from celery import Celery

from pipeline.config import CelerySettings
from pipeline.messages import TaskKey

TASK_NAME: Final = "pipeline.run_command"

_TASK_ID_NAMESPACE: Final = uuid.UUID("5b0c3f52-6a53-4f0e-9a53-1f3c2d7e9b41")


def task_id_for(key: TaskKey) -> str:
    """The Celery task id of one try of one task: a duplicate request maps to the same id."""
    material = orjson.dumps(list(key.to_wire().values())).decode()
    return str(uuid.uuid5(_TASK_ID_NAMESPACE, material))


def make_app(celery: CelerySettings, *, fail_fast: bool = False) -> Celery:
    """A Celery app for dispatcher, monitor and workers alike (nothing connects until used).

    `fail_fast` is for callers that retry connection errors themselves (the dispatcher and
    monitor): kombu then reports an unreachable broker at once instead of retrying inside.
    """
    transport: dict[str, Any] = {
        "visibility_timeout": celery.visibility_timeout_s,
        "unacked_restore_interval": celery.unacked_restore_interval_s,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
    }
    if fail_fast:
        transport["max_retries"] = 0
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
        result_expires=int(celery.dispatch_record_ttl_s),
        worker_hijack_root_logger=False,
    )
    return app
