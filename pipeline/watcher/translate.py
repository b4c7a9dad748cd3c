"""Pod → what happened to its task: pure translation of pod documents into TaskEvents.

Works on pods as the API serves them (camelCase JSON dicts), so list responses, watch
frames and checkpoints all go through the same code. The event id is derived from the
pod uid and the task state, not the resourceVersion: the same fact seen twice (by two
replicas, after a relist, after a restart) gets the same id, so the reducer drops it as a
duplicate instead of recording a second transition. A pod re-created under the same name
has a new uid, so its facts stay distinct.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from pipeline.messages import (
    TERMINAL_STATES,
    CancelInfo,
    State,
    TaskEvent,
    TaskKey,
    cancelled_reason,
    make_event,
    parse_time,
)
from pipeline.podlogs import MAIN_CONTAINER, LogSource
from pipeline.pods import cancel_from_annotations, key_from_annotations

SOURCE: Final = "watcher"
EXECUTOR: Final = "kubernetes"
# Waiting reasons a pod never leaves on its own (ErrImagePull is retried into ImagePullBackOff).
FATAL_WAITING: Final = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CrashLoopBackOff",
    }
)
# Waiting reasons on a pending pod's ordinary way to running: nothing holds it back.
ROUTINE_WAITING: Final = frozenset({"ContainerCreating", "PodInitializing"})
_REASON_MAX = 1024
_RANK: Final = {
    State.LAUNCHED: 0, State.RUNNING: 2, State.SUCCESS: 3, State.FAILED: 3, State.CANCELLED: 3,
}  # fmt: skip

Pod = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PodObservation:
    """One pod's task state at one resourceVersion, with the reason when it says more."""

    key: TaskKey
    uid: str
    name: str
    namespace: str
    resource_version: str
    state: State
    reason: str | None = None
    exit_code: int | None = None
    created_at: str | None = None
    cancel: CancelInfo | None = None  # the launcher ended this pod for a cancel
    # a finished pod's container and secrets, so its log is read without reading the pod
    log_source: LogSource | None = field(default=None, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def held_back(self) -> bool:
        """Pending for a reason worth telling (unschedulable, an image that does not pull)."""
        return self.state is State.LAUNCHED and self.reason not in (None, *ROUTINE_WAITING)

    def rank(self) -> int:
        """Progress order: pending < held back < running < terminal; the watcher never reports
        a step back."""
        return _RANK[self.state] + self.held_back

    def to_event(self) -> TaskEvent:
        return make_event(
            self.key,
            SOURCE,
            self.state,
            discriminator=self.uid,
            reason=self.reason,
            executor=EXECUTOR,
            pod_name=self.name,
            namespace=self.namespace,
            resource_version=self.resource_version,
            exit_code=self.exit_code,
            cancel=self.cancel if self.state is State.CANCELLED else None,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": self.key.to_wire(),
            "uid": self.uid,
            "name": self.name,
            "namespace": self.namespace,
            "resource_version": self.resource_version,
            "state": self.state.value,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "created_at": self.created_at,
            "cancel": self.cancel,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> PodObservation:
        return cls(
            key=TaskKey.from_wire(data["key"]),
            uid=data["uid"],
            name=data["name"],
            namespace=data["namespace"],
            resource_version=data["resource_version"],
            state=State(data["state"]),
            reason=data.get("reason"),
            exit_code=data.get("exit_code"),
            created_at=data.get("created_at"),
            cancel=data.get("cancel"),
        )


def task_key(pod: Pod) -> TaskKey | None:
    """The task a pod runs, from its annotations; None for pods this project did not launch."""
    return key_from_annotations((pod.get("metadata") or {}).get("annotations"))


def observe(pod: Pod, *, deleted: bool = False) -> PodObservation | None:
    """The task state a pod shows, or None when it shows none (unmanaged, phase Unknown).

    `deleted` marks the last version of a pod that is gone: a pod that had not finished
    then fails, since nothing will ever run it.
    """
    key = task_key(pod)
    if key is None:
        return None
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    state, reason, exit_code = _phase_state(
        phase, status, deleting=bool(metadata.get("deletionTimestamp"))
    )
    if state is None:
        return None
    cancel = cancel_from_annotations(metadata.get("annotations"))
    unfinished_end = deleted and state not in TERMINAL_STATES
    if cancel is not None and (state is State.FAILED or unfinished_end):
        state, reason = State.CANCELLED, cancelled_reason(cancel)  # killed because cancelled
    elif unfinished_end:
        state, reason = State.FAILED, f"pod deleted while {phase.lower()}" + _suffix(reason)
    return PodObservation(
        key=key,
        uid=str(metadata.get("uid") or ""),
        name=str(metadata.get("name") or ""),
        namespace=str(metadata.get("namespace") or ""),
        resource_version=str(metadata.get("resourceVersion") or ""),
        state=state,
        reason=_clip(reason),
        exit_code=exit_code,
        created_at=metadata.get("creationTimestamp"),
        cancel=cancel,
        log_source=LogSource.of(pod) if state in TERMINAL_STATES else None,
    )


def vanished(last: PodObservation) -> PodObservation:
    """A pod that disappeared while no watch was running: its final state is unknown (unless
    it was being cancelled)."""
    if last.cancel is not None:
        return replace(last, state=State.CANCELLED, reason=cancelled_reason(last.cancel))
    reason = f"pod deleted while the watch was away (last seen {last.state.value})"
    return replace(last, state=State.FAILED, reason=reason, exit_code=None)


def timed_out(pending: PodObservation, timeout_s: float) -> PodObservation:
    """The failure of a pod that stayed Pending past the timeout (it is deleted)."""
    reason = f"pending timeout: still Pending after {timeout_s:g}s" + _suffix(pending.reason)
    return replace(pending, state=State.FAILED, reason=_clip(reason))


def pending_seconds(pod: PodObservation, now: datetime | None = None) -> float:
    """How long ago the pod was created (0 when the API gave no timestamp)."""
    if not pod.created_at:
        return 0.0
    created = parse_time(pod.created_at)
    return ((now or datetime.now(UTC)) - created).total_seconds()


# -- phases ----------------------------------------------------------------------------------


def _phase_state(
    phase: str, status: Mapping[str, Any], *, deleting: bool
) -> tuple[State | None, str | None, int | None]:
    containers: Sequence[Mapping[str, Any]] = status.get("containerStatuses") or []
    if phase == "Pending":
        return _pending(status, containers)
    if phase == "Running":
        return State.RUNNING, None, None
    if phase == "Succeeded":
        return State.SUCCESS, None, _exit_code(containers)
    if phase == "Failed":
        reason, exit_code = _failure(status, containers)
        return (
            State.FAILED,
            ("pod deleted while running: " + reason if deleting else reason),
            exit_code,
        )
    return None, None, None


def _pending(
    status: Mapping[str, Any], containers: Sequence[Mapping[str, Any]]
) -> tuple[State, str | None, int | None]:
    inits: Sequence[Mapping[str, Any]] = status.get("initContainerStatuses") or []
    labelled = [
        *((f"init container {c.get('name')}: ", c) for c in inits),
        *(("", c) for c in containers),
    ]
    for prefix, container in labelled:  # an init container stuck keeps the pod Pending too
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in FATAL_WAITING:
            return State.FAILED, prefix + _with_message(reason, waiting.get("message")), None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            return State.LAUNCHED, _with_message(reason, condition.get("message")), None
    waiting_reasons = [
        ((c.get("state") or {}).get("waiting") or {}).get("reason") for c in containers
    ]
    return State.LAUNCHED, next((r for r in waiting_reasons if r), None), None


def _failure(
    status: Mapping[str, Any], containers: Sequence[Mapping[str, Any]]
) -> tuple[str, int | None]:
    """The most precise reason a Failed pod gives: pod-level first, then its containers."""
    exit_code = _exit_code(containers)
    pod_reason = status.get("reason")
    if pod_reason:  # Evicted, DeadlineExceeded, NodeLost, ...
        return _with_message(pod_reason, status.get("message")), exit_code
    failing = [t for t in _terminated(containers) if t.get("exitCode") not in (0, None)]
    if failing:
        return _container_failure(failing[0])
    init = _failed_init(status)
    if init is not None:  # the pod's containers never started
        name, ended = init
        reason, code = _container_failure(ended)
        return f"init container {name}: {reason}", code
    return _with_message("pod failed", status.get("message")), exit_code


def _container_failure(ended: Mapping[str, Any]) -> tuple[str, int | None]:
    """Why one container's end failed the pod, and its exit code."""
    if ended.get("reason") == "OOMKilled":
        return "OOMKilled", ended.get("exitCode")
    reason = f"exit code {ended.get('exitCode')}"
    if ended.get("reason") and ended.get("reason") != "Error":
        reason += f" ({ended['reason']})"
    return _with_message(reason, ended.get("message")), ended.get("exitCode")


def _failed_init(status: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The init container whose failure failed the pod, with its end, if one did."""
    for container in status.get("initContainerStatuses") or []:
        ended = (container.get("state") or {}).get("terminated") or {}
        if ended.get("exitCode") not in (0, None):
            return str(container.get("name")), ended
    return None


def _terminated(containers: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Terminated states, the main container first."""
    ordered = sorted(containers, key=lambda c: c.get("name") != MAIN_CONTAINER)
    states = [(c.get("state") or {}).get("terminated") for c in ordered]
    return [s for s in states if s]


def _exit_code(containers: Sequence[Mapping[str, Any]]) -> int | None:
    terminated = _terminated(containers)
    failing = [t["exitCode"] for t in terminated if t.get("exitCode") not in (0, None)]
    if failing:
        return int(failing[0])
    codes = [t["exitCode"] for t in terminated if t.get("exitCode") is not None]
    return int(codes[0]) if codes else None


def _with_message(reason: str, message: str | None) -> str:
    return f"{reason}: {message.strip()}" if message and message.strip() else reason


def _suffix(reason: str | None) -> str:
    return f" ({reason})" if reason else ""


def _clip(reason: str | None) -> str | None:
    return (
        reason if reason is None or len(reason) <= _REASON_MAX else reason[: _REASON_MAX - 1] + "…"
    )
