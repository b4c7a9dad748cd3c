"""Server-side printing: `meta.k8s.io/v1` Tables, the form `kubectl get` asks for.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the cells as
they come, so READY, STATUS, RESTARTS and AGE are computed here the way apiserver's pod
printer computes them (the STATUS a user reads is that printer's "reason", not the phase).
Columns with priority 1 are the extra ones `-o wide` shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .status import JsonObj, bad_request

Row = Callable[[JsonObj, float], list[Any]]

POD_COLUMNS: list[JsonObj] = [
    {"name": "Name", "type": "string", "format": "name", "priority": 0,
     "description": "Name must be unique within a namespace."},
    {"name": "Ready", "type": "string", "format": "", "priority": 0,
     "description": "The aggregate readiness state of this pod for accepting traffic."},
    {"name": "Status", "type": "string", "format": "", "priority": 0,
     "description": "The aggregate status of the containers in this pod."},
    {"name": "Restarts", "type": "string", "format": "", "priority": 0,
     "description": "The number of times the containers in this pod have been restarted "
     "and when the last container in this pod has restarted."},
    {"name": "Age", "type": "string", "format": "", "priority": 0,
     "description": "CreationTimestamp is a timestamp representing the server time when "
     "this object was created."},
    {"name": "IP", "type": "string", "format": "", "priority": 1,
     "description": "podIP address allocated to the pod."},
    {"name": "Node", "type": "string", "format": "", "priority": 1,
     "description": "NodeName is a request to schedule this pod onto a specific node."},
    {"name": "Nominated Node", "type": "string", "format": "", "priority": 1,
     "description": "nominatedNodeName is set only when this pod preempts other pods on "
     "the node."},
    {"name": "Readiness Gates", "type": "string", "format": "", "priority": 1,
     "description": "If specified, all readiness gates will be evaluated for pod readiness."},
]  # fmt: skip


def wants_table(accept: str) -> bool:
    """Whether the Accept header asks for a meta.k8s.io Table (v1 or v1beta1)."""
    for media in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in media.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return params.get("v") in ("v1", "v1beta1")
    return False


def include_object(params: Mapping[str, str]) -> str:
    """`includeObject`: None, Metadata (the default) or Object."""
    value = params.get("includeObject") or "Metadata"
    if value not in ("None", "Metadata", "Object"):
        raise bad_request(f'includeObject: Unsupported value: "{value}"')
    return value


def table(
    objects: Iterable[JsonObj],
    columns: Sequence[JsonObj],
    row: Row,
    *,
    metadata: JsonObj | None = None,
    include: str = "Metadata",
    headers: bool = True,
) -> JsonObj:
    now = time.time()
    body: JsonObj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata or {}}
    if headers:
        body["columnDefinitions"] = list(columns)
    body["rows"] = [_row(obj, row(obj, now), include) for obj in objects]
    return body


def pod_table(
    pods: Iterable[JsonObj],
    *,
    metadata: JsonObj | None = None,
    include: str = "Metadata",
    headers: bool = True,
) -> JsonObj:
    return table(pods, POD_COLUMNS, pod_row, metadata=metadata, include=include, headers=headers)


def pod_row(pod: JsonObj, now: float) -> list[Any]:
    """NAME READY STATUS RESTARTS AGE IP NODE NOMINATED-NODE READINESS-GATES."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    reason, ready, restarts, last_restart = _pod_summary(pod)
    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"
    ips = status.get("podIPs") or []
    gates = spec.get("readinessGates") or []
    return [
        pod["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts_text,
        age(pod, now),
        (ips[0].get("ip") if ips else None) or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        _readiness_gates(gates, status) if gates else "<none>",
    ]


def age(obj: JsonObj, now: float) -> str:
    created = obj["metadata"].get("creationTimestamp")
    return human_duration(now - parse_time(created)) if created else "<unknown>"


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: `5s`, `2m3s`, `3h4m`, `5d`, `2y10d`."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes, hours = s // 60, s // 3600
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, hours // 24 % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _pod_summary(pod: JsonObj) -> tuple[str, int, int, float | None]:
    """(STATUS reason, ready containers, restarts, last restart) as the pod printer finds them."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    ready = restarts = 0
    last_restart: float | None = None
    containers = status.get("containerStatuses") or []
    initializing, init_reason, init_restarts, init_last = _init_summary(pod)
    if initializing and not _condition_true(status, "Initialized"):
        reason, restarts, last_restart = init_reason, init_restarts, init_last
        containers = []  # the printer shows the init containers' progress alone
    running = False
    for container in reversed(containers):
        restarts += int(container.get("restartCount") or 0)
        last_restart = _later(last_restart, container)
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated and terminated.get("reason"):
            reason = terminated["reason"]
        elif terminated:
            signal = terminated.get("signal")
            reason = f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode', 0)}"
        elif container.get("ready") and state.get("running") is not None:
            running = True
            ready += 1
    if reason == "Completed" and running:
        has_ready = any(c.get("type") == "Ready" for c in status.get("conditions") or [])
        reason = "Running" if has_ready else "NotReady"
    deleting = pod["metadata"].get("deletionTimestamp")
    if deleting and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and status.get("phase") not in ("Succeeded", "Failed"):
        reason = "Terminating"
    return reason, ready, restarts, last_restart


def _init_summary(pod: JsonObj) -> tuple[bool, str, int, float | None]:
    """(initializing, STATUS reason, restarts, last restart) from the init containers, as
    the pod printer reads them: Init:N/M, Init:<reason>, Init:ExitCode:N."""
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    total = len(pod["spec"].get("initContainers") or [])
    restarts, last_restart = 0, None
    for i, container in enumerate(statuses):
        restarts += int(container.get("restartCount") or 0)
        last_restart = _later(last_restart, container)
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting") or {}
        if terminated and terminated.get("exitCode") == 0:
            continue
        if terminated:
            code = terminated.get("exitCode", 0)
            return (
                True,
                f"Init:{terminated.get('reason') or f'ExitCode:{code}'}",
                restarts,
                last_restart,
            )
        if waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return True, f"Init:{waiting['reason']}", restarts, last_restart
        return True, f"Init:{i}/{total}", restarts, last_restart
    return False, "", restarts, last_restart


def _later(last: float | None, container: JsonObj) -> float | None:
    """The later of `last` and the container's last restart."""
    finished = ((container.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
    if not finished:
        return last
    at = parse_time(finished)
    return at if last is None else max(last, at)


def _condition_true(status: JsonObj, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _readiness_gates(gates: list[JsonObj], status: JsonObj) -> str:
    true = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
    met = sum(1 for g in gates if g.get("conditionType") in true)
    return f"{met}/{len(gates)}"


def _row(obj: JsonObj, cells: list[Any], include: str) -> JsonObj:
    row: JsonObj = {"cells": cells}
    if include == "Object":
        row["object"] = obj
    elif include == "Metadata":
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }
    return row
