"""Pod documents shaped as the API serves them, for the watcher's pure tests."""

from __future__ import annotations

from typing import Any

from pipeline.messages import TaskKey
from pipeline.pods import pod_annotations, pod_labels, pod_name

KEY = TaskKey("etl", "extract", "manual__1", -1, 1)


def pod(
    phase: str = "Pending",
    *,
    key: TaskKey = KEY,
    uid: str = "uid-1",
    rv: str = "10",
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    reason: str | None = None,
    message: str | None = None,
    deleting: bool = False,
    created: str = "2026-01-01T00:00:00Z",
    managed: bool = True,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": pod_name(key),
        "namespace": "default",
        "uid": uid,
        "resourceVersion": rv,
        "creationTimestamp": created,
        "labels": pod_labels(key, "launcher-a"),
        "annotations": pod_annotations(key) if managed else {},
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:05:00Z"
    status: dict[str, Any] = {"phase": phase, "containerStatuses": containers or []}
    if init_containers:
        status["initContainerStatuses"] = init_containers
    if conditions:
        status["conditions"] = conditions
    if reason:
        status.update(reason=reason, message=message)
    return {"metadata": metadata, "spec": {"containers": [{"name": "base"}]}, "status": status}


def waiting(reason: str, message: str | None = None, name: str = "base") -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason}
    if message:
        state["message"] = message
    return {"name": name, "state": {"waiting": state}}


def terminated(
    code: int, reason: str = "Error", name: str = "base", message: str | None = None
) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": code, "reason": reason}
    if message:
        state["message"] = message
    return {"name": name, "state": {"terminated": state}}


def unschedulable(message: str) -> dict[str, Any]:
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
    }
