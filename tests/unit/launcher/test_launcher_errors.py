"""Retry delays: server-requested delays are honoured, otherwise jittered exponential backoff."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pipeline.launcher.errors import PodRejected, RetryLater, retry_delay


def test_errors_say_whether_they_are_retriable() -> None:
    assert RetryLater("503").retriable
    assert not PodRejected("422").retriable


@given(attempt=st.integers(1, 30), seed=st.integers())
def test_backoff_grows_within_jittered_bounds(attempt: int, seed: int) -> None:
    delay = retry_delay(RetryLater("503"), attempt, base=0.5, cap=30.0, rng=random.Random(seed))
    ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
    assert ceiling / 2 <= delay <= ceiling


@given(asked=st.floats(0.1, 120), seed=st.integers())
def test_retry_after_is_honoured(asked: float, seed: int) -> None:
    delay = retry_delay(RetryLater("429", asked), 1, base=0.5, cap=30.0, rng=random.Random(seed))
    assert asked <= delay <= asked + 0.5


def test_jitter_spreads_retries() -> None:
    rng = random.Random(1)
    delays = {retry_delay(RetryLater("x"), 3, base=1.0, cap=60.0, rng=rng) for _ in range(20)}
    assert len(delays) == 20
