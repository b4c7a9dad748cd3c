"""Why a launch did not happen, and whether trying again can help.

Errors carry `retriable` (so retry code branches on one attribute, not on exception lists),
and a `RetryLater` may carry the delay the server asked for (Retry-After).
"""

from __future__ import annotations

import random


class LaunchError(Exception):
    """A launch attempt that did not create the pod; `reason` is what the task event says."""

    retriable = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PodRejected(LaunchError):
    """The pod must not or cannot be created as asked (build, hook, policy, 400/422)."""


class RetryLater(LaunchError):
    """A transient failure (429, 5xx, connection, timeout); `delay` is the server's wish."""

    retriable = True

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


def retry_delay(
    error: LaunchError, attempt: int, *, base: float, cap: float, rng: random.Random
) -> float:
    """Seconds before retry number `attempt` (1-based): Retry-After when given, else backoff.

    Exponential backoff with jitter over the upper half (`base * 2**(attempt-1)`, capped), so
    retries of many tasks spread out yet never come back immediately.
    """
    ceiling = min(cap, base * 2 ** (attempt - 1))
    backoff = ceiling * (0.5 + rng.random() / 2)
    asked = error.delay if isinstance(error, RetryLater) else None
    if asked is not None and asked > 0:
        return float(asked) + rng.random() * base
    return float(backoff)
