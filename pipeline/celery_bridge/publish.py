"""Sending a task to the Celery broker, with the retry policy both stages share."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, TypeVar

import prometheus_client as prom
from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError as DatabaseUnavailable

from pipeline.celery_bridge.app import TASK_NAME
from pipeline.celery_bridge.ledger import DispatchRecord
from pipeline.config import CelerySettings

log = logging.getLogger(__name__)

RETRIABLE: Final = (OperationalError, RedisError, DatabaseUnavailable, OSError)
"""Broker or backend unreachable (or a database locked too long): worth another try."""

MAX_BACKOFF_S: Final = 10.0

RETRIES = prom.Counter(
    "pipeline_celery_publish_retries_total", "Broker or backend calls retried after an error."
)

T = TypeVar("T")


def retrying(
    call: Callable[[], T], celery: CelerySettings, sleep: Callable[[float], None] = time.sleep
) -> T:
    """`call()`, retried on connection errors up to `task_publish_max_retries` times with
    exponential backoff; the last error propagates."""
    for attempt in range(celery.task_publish_max_retries + 1):
        try:
            return call()
        except RETRIABLE as exc:
            if attempt == celery.task_publish_max_retries:
                raise
            delay = min(celery.publish_retry_backoff_s * 2**attempt, MAX_BACKOFF_S)
            log.warning("celery call failed, retrying in %.1fs: %s", delay, exc)
            RETRIES.inc()
            sleep(delay)
    raise AssertionError("unreachable")


def send(app: Celery, task_id: str, record: DispatchRecord) -> None:
    """Publish the task once; Celery's own retry is off so `retrying` alone sets the policy."""
    app.send_task(
        TASK_NAME, args=[record["payload"]], task_id=task_id, queue=record["queue"], retry=False
    )
