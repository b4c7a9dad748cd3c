"""The publish retry policy: connection errors retried with backoff, others at once."""

from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError

from pipeline.celery_bridge.publish import retrying
from pipeline.config import CelerySettings


def flaky(failures: int, error: Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "sent"

    return calls, call


def test_retries_with_doubling_backoff_until_it_works() -> None:
    delays: list[float] = []
    calls, call = flaky(3, OperationalError("refused"))
    celery = CelerySettings(task_publish_max_retries=3, publish_retry_backoff_s=0.5)
    assert retrying(call, celery, sleep=delays.append) == "sent"  # type: ignore[arg-type]
    assert (len(calls), delays) == (4, [0.5, 1.0, 2.0])


def test_gives_up_after_max_retries() -> None:
    delays: list[float] = []
    calls, call = flaky(10, ConnectionRefusedError())
    with pytest.raises(ConnectionRefusedError):
        retrying(call, CelerySettings(task_publish_max_retries=2), sleep=delays.append)  # type: ignore[arg-type]
    assert len(calls) == 3


def test_a_non_connection_error_is_not_retried() -> None:
    calls, call = flaky(1, ValueError("cannot encode"))
    with pytest.raises(ValueError):
        retrying(call, CelerySettings(), sleep=lambda _: None)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_visibility_timeout_must_outlast_execution() -> None:
    with pytest.raises(ValueError, match="visibility_timeout_s"):
        CelerySettings(execution_timeout_s=10, visibility_timeout_s=5)
