"""Pod status documents as a kubelet writes them, one function per lifecycle step.

Pure: each takes the current pod and returns a new one. Shapes follow core/v1 PodStatus so
that watchers reading `containerStatuses[].state.terminated.exitCode`, `reason` and the
conditions see what a real node reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .pods import rfc3339
from .status import JsonObj

HOST_IP = "10.0.0.10"
MAIN, INIT = "containers", "initContainers"  # a pod's two kinds of containers, by spec field
_STATUSES = {MAIN: "containerStatuses", INIT: "initContainerStatuses"}
_INCOMPLETE = "ContainersNotInitialized"


@dataclass(frozen=True, slots=True)
class Termination:
    """How one container ended."""

    exit_code: int
    reason: str  # Completed, Error, OOMKilled, StartError
    started_at: str
    finished_at: str
    message: str | None = None


def bound(pod: JsonObj, node: str) -> JsonObj:
    spec = {**pod["spec"], "nodeName": pod["spec"].get("nodeName") or node}
    status = _with_conditions(pod["status"], PodScheduled=("True", None, None))
    return {**pod, "spec": spec, "status": status}


def unschedulable(pod: JsonObj, message: str) -> JsonObj:
    status = _with_conditions(pod["status"], PodScheduled=("False", "Unschedulable", message))
    return {**pod, "status": status}


def creating(pod: JsonObj, pod_ip: str) -> JsonObj:
    """Sandbox up, containers being created (or waiting for the init containers): still
    Pending, now with startTime and IPs."""
    inits = _names(pod, INIT)
    initialized = (
        ("False", _INCOMPLETE, f"containers with incomplete status: [{inits}]")
        if inits
        else ("True", None, None)
    )
    status = _with_conditions(
        pod["status"],
        PodReadyToStartContainers=("True", None, None),
        Initialized=initialized,
        Ready=("False", "ContainersNotReady", _not_ready(pod)),
        ContainersReady=("False", "ContainersNotReady", _not_ready(pod)),
    )
    status.update(
        phase="Pending",
        hostIP=HOST_IP,
        hostIPs=[{"ip": HOST_IP}],
        podIP=pod_ip,
        podIPs=[{"ip": pod_ip}],
        startTime=rfc3339(),
    )
    if not inits:
        return _containers(pod, status, lambda c: _waiting(c, "ContainerCreating", None))
    pod = _containers(pod, status, lambda c: _waiting(c, "PodInitializing", None))
    return _containers(pod, pod["status"], lambda c: _waiting(c, "PodInitializing", None), INIT)


def init_running(pod: JsonObj, name: str, started_at: str) -> JsonObj:
    """Init container `name` runs (alone: they run one after another)."""
    uid = pod["metadata"]["uid"]

    def build(container: JsonObj, old: JsonObj) -> JsonObj:
        if container["name"] != name:
            return old
        return {**_running(container, old, started_at, uid), "ready": False}

    return _each_container(pod, dict(pod["status"]), build, INIT)


def init_ended(pod: JsonObj, name: str, end: Termination) -> JsonObj:
    """Init container `name` ended: done when it exited 0, else the pod failed for good."""
    uid = pod["metadata"]["uid"]

    def build(container: JsonObj, old: JsonObj) -> JsonObj:
        if container["name"] != name:
            return old
        return {**_terminated(container, end, uid, old), "ready": end.exit_code == 0}

    pod = _each_container(pod, dict(pod["status"]), build, INIT)
    if end.exit_code != 0:
        return failed(pod)
    status = pod["status"]
    left = " ".join(
        c["name"] for c in status["initContainerStatuses"] if "terminated" not in c["state"]
    )
    if left:
        why = f"containers with incomplete status: [{left}]"
        return {**pod, "status": _with_conditions(status, Initialized=("False", _INCOMPLETE, why))}
    status = _with_conditions(status, Initialized=("True", None, None))
    return _containers(pod, status, lambda c: _waiting(c, "ContainerCreating", None))


def init_restarting(pod: JsonObj, name: str, end: Termination, message: str) -> JsonObj:
    """Init container `name` failed and waits out its restart back-off."""
    return _back_off(pod, dict(pod["status"]), name, end, message, INIT)


def waiting(pod: JsonObj, reason: str, message: str | None) -> JsonObj:
    """Containers stuck before start, e.g. ErrImagePull / ImagePullBackOff."""
    return _containers(pod, dict(pod["status"]), lambda c: _waiting(c, reason, message))


def running(pod: JsonObj, started_at: str) -> JsonObj:
    status = _with_conditions(
        pod["status"],
        Ready=("True", None, None),
        ContainersReady=("True", None, None),
    )
    status["phase"] = "Running"
    uid = pod["metadata"]["uid"]
    return _containers(pod, status, lambda c: _running(c, _old(pod, c), started_at, uid))


def _running(container: JsonObj, old: JsonObj, started_at: str, uid: str) -> JsonObj:
    return {
        **_base(container, old),
        "state": {"running": {"startedAt": started_at}},
        "ready": True,
        "started": True,
        "containerID": f"sandbox://{uid}-{container['name']}",
    }


def restarting(pod: JsonObj, name: str, end: Termination, message: str) -> JsonObj:
    """One container exited and waits out its restart back-off (CrashLoopBackOff)."""
    status = _with_conditions(
        pod["status"],
        Ready=("False", "ContainersNotReady", f"containers with unready status: [{name}]"),
        ContainersReady=(
            "False",
            "ContainersNotReady",
            f"containers with unready status: [{name}]",
        ),
    )
    return _back_off(pod, status, name, end, message)


def _back_off(
    pod: JsonObj, status: JsonObj, name: str, end: Termination, message: str, kind: str = MAIN
) -> JsonObj:
    uid = pod["metadata"]["uid"]

    def build(container: JsonObj, old: JsonObj) -> JsonObj:
        if container["name"] != name:
            return old
        waiting = {"reason": "CrashLoopBackOff", "message": message}
        last = _terminated(container, end, uid, old)["state"]
        return {
            **_base(container, old),
            "state": {"waiting": waiting},
            "lastState": last,
            "restartCount": old.get("restartCount", 0) + 1,
        }

    return _each_container(pod, status, build, kind)


def restarted(pod: JsonObj, name: str, started_at: str) -> JsonObj:
    """A container runs again after a restart; the pod is Ready once all of them are."""
    uid = pod["metadata"]["uid"]

    def build(container: JsonObj, old: JsonObj) -> JsonObj:
        return _running(container, old, started_at, uid) if container["name"] == name else old

    pod = _each_container(pod, dict(pod["status"]), build)
    if all(c.get("ready") for c in pod["status"]["containerStatuses"]):
        status = _with_conditions(
            pod["status"], Ready=("True", None, None), ContainersReady=("True", None, None)
        )
        pod = {**pod, "status": status}
    return pod


def failed(pod: JsonObj, reason: str | None = None, message: str | None = None) -> JsonObj:
    """Failed before its app containers ran: an init container failed, or a pod-level
    `reason` such as DeadlineExceeded came while it was Pending."""
    status = _with_conditions(
        pod["status"],
        Ready=("False", "PodFailed", None),
        ContainersReady=("False", "PodFailed", None),
    )
    status["phase"] = "Failed"
    if reason is not None:
        status.update(reason=reason, message=message)
    return {**pod, "status": status}


def terminated(
    pod: JsonObj,
    ends: dict[str, Termination],
    reason: str | None = None,
    message: str | None = None,
) -> JsonObj:
    """Terminal phase from the exit codes; `reason` marks pod-level ends such as Evicted."""
    ok = all(end.exit_code == 0 for end in ends.values()) and reason is None
    conditions: dict[str, tuple[str, str | None, str | None]] = {
        "PodReadyToStartContainers": ("False", None, None),
        "Ready": ("False", "PodCompleted", None),
        "ContainersReady": ("False", "PodCompleted", None),
    }
    if reason == "Evicted":
        conditions["DisruptionTarget"] = ("True", "TerminationByKubelet", message)
    status = _with_conditions(pod["status"], **conditions)
    status["phase"] = "Succeeded" if ok else "Failed"
    if reason is not None:
        status.update(reason=reason, message=message)
    uid = pod["metadata"]["uid"]
    return _containers(pod, status, lambda c: _terminated(c, ends[c["name"]], uid, _old(pod, c)))


def _terminated(container: JsonObj, end: Termination, uid: str, old: JsonObj) -> JsonObj:
    state: JsonObj = {
        "exitCode": end.exit_code,
        "reason": end.reason,
        "startedAt": end.started_at,
        "finishedAt": end.finished_at,
        "containerID": f"sandbox://{uid}-{container['name']}",
    }
    if end.message:
        state["message"] = end.message
    return {**_base(container, old), "state": {"terminated": state}, "started": False}


def _waiting(container: JsonObj, reason: str, message: str | None) -> JsonObj:
    state: JsonObj = {"reason": reason}
    if message:
        state["message"] = message
    return {**_base(container, {}), "state": {"waiting": state}}


def _base(container: JsonObj, old: JsonObj) -> JsonObj:
    """A fresh status entry that keeps what survives a restart: restartCount and lastState,
    and the ID of the container that last ran."""
    entry: JsonObj = {
        "name": container["name"],
        "state": {},
        "lastState": old.get("lastState") or {},
        "ready": False,
        "restartCount": old.get("restartCount", 0),
        "image": container["image"],
        "imageID": "",
        "started": False,
    }
    if old.get("containerID"):
        entry["containerID"] = old["containerID"]
    return entry


def _old(pod: JsonObj, container: JsonObj, kind: str = MAIN) -> JsonObj:
    """The container's current status entry, or {} before it has one."""
    for entry in pod["status"].get(_STATUSES[kind]) or []:
        if entry["name"] == container["name"]:
            return dict(entry)
    return {}


def _containers(
    pod: JsonObj, status: JsonObj, build: Callable[[JsonObj], JsonObj], kind: str = MAIN
) -> JsonObj:
    status[_STATUSES[kind]] = [build(c) for c in pod["spec"].get(kind) or []]
    return {**pod, "status": status}


def _each_container(
    pod: JsonObj, status: JsonObj, build: Callable[[JsonObj, JsonObj], JsonObj], kind: str = MAIN
) -> JsonObj:
    status[_STATUSES[kind]] = [build(c, _old(pod, c, kind)) for c in pod["spec"].get(kind) or []]
    return {**pod, "status": status}


def _names(pod: JsonObj, kind: str) -> str:
    return " ".join(c["name"] for c in pod["spec"].get(kind) or [])


def _not_ready(pod: JsonObj) -> str:
    return f"containers with unready status: [{_names(pod, MAIN)}]"


def _with_conditions(status: JsonObj, **changes: tuple[str, str | None, str | None]) -> JsonObj:
    """Set conditions by type; lastTransitionTime moves only when the status flips."""
    now = rfc3339()
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    for kind, (value, reason, message) in changes.items():
        old = conditions.get(kind)
        changed_at = old["lastTransitionTime"] if old and old["status"] == value else now
        condition: JsonObj = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": changed_at,
        }
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        conditions[kind] = condition
    return {**status, "conditions": list(conditions.values())}
