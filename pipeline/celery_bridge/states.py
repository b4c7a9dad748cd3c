"""What a Celery result-backend entry says about a task, in the pipeline's terms (pure logic).

The worker stores its command's outcome as a SUCCESS result (`ok`, `exit_code`, `reason`),
so a failed command arrives with its exit code; a Celery FAILURE means the task itself broke.
A cancelled task's result carries its `cancel`, and a revoked one shows REVOKED: both are
`cancelled`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import states as celery_states

from pipeline.messages import CancelInfo, State


@dataclass(frozen=True)
class Observation:
    """The pipeline state a backend entry maps to; `state` None means not started yet."""

    state: State | None
    reason: str | None = None
    exit_code: int | None = None
    cancel: CancelInfo | None = None
    lost: bool = False
    """The worker that first ran the command died; the try failed or ran again (see worker)."""


NOT_STARTED = Observation(None)


def observe(meta: dict[str, Any] | None) -> Observation:
    """Map a decoded backend entry (None when absent: still queued) to an Observation."""
    if meta is None:
        return NOT_STARTED
    status = meta.get("status")
    result = meta.get("result")
    if status == celery_states.SUCCESS:
        return _finished(result)
    if status in (celery_states.STARTED, celery_states.RETRY):
        return Observation(State.RUNNING)
    if status == celery_states.FAILURE:
        return Observation(State.FAILED, f"celery task failed: {_error_text(result)}")
    if status == celery_states.REVOKED:  # a cancel (the monitor's own revokes report first)
        return Observation(State.CANCELLED, "celery task revoked")
    return NOT_STARTED  # PENDING, RECEIVED: known to the broker, not yet running


def _finished(result: Any) -> Observation:
    if not isinstance(result, dict) or "ok" not in result:
        return Observation(State.FAILED, f"unexpected task result: {str(result)[:200]}")
    exit_code, lost = result.get("exit_code"), bool(result.get("lost"))
    if result.get("cancel"):
        return Observation(State.CANCELLED, result.get("reason"), exit_code, result["cancel"])
    if result["ok"]:
        return Observation(State.SUCCESS, None, exit_code, lost=lost)
    return Observation(State.FAILED, result.get("reason") or "failed", exit_code, lost=lost)


def _error_text(result: Any) -> str:
    if isinstance(result, dict):
        kind = result.get("exc_type", "error")
        message = result.get("exc_message", "")
        if isinstance(message, list | tuple):
            message = " ".join(str(part) for part in message)
        return f"{kind}: {message}"[:1000]
    return str(result)[:1000]
