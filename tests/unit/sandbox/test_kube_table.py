"""The pod printer: STATUS, READY, RESTARTS and AGE as kubectl shows them."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.sandbox.kube.table import human_duration, pod_row, pod_table, wants_table

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def pod(
    phase: str = "Running",
    *states: dict[str, Any],
    deleting: bool = False,
    **status: Any,
) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": "busybox"} for i in range(len(states) or 1)]
    metadata: dict[str, Any] = {"name": "p", "creationTimestamp": "2023-11-14T22:12:20Z"}
    if deleting:
        metadata["deletionTimestamp"] = "2023-11-14T22:13:19Z"
    statuses = [{"name": f"c{i}", **s} for i, s in enumerate(states)]
    return {
        "metadata": metadata,
        "spec": {"containers": containers, "nodeName": "n1"},
        "status": {"phase": phase, "containerStatuses": statuses, **status},
    }


RUNNING = {"ready": True, "restartCount": 0, "state": {"running": {}}}


def waiting(reason: str) -> dict[str, Any]:
    return {"state": {"waiting": {"reason": reason}}}


def ended(**terminated: Any) -> dict[str, Any]:
    return {"state": {"terminated": terminated}}


@pytest.mark.parametrize(
    ("obj", "status", "ready"),
    [
        (pod("Pending", waiting("ContainerCreating")), "ContainerCreating", "0/1"),
        (pod("Pending"), "Pending", "0/1"),
        (pod("Running", RUNNING), "Running", "1/1"),
        (pod("Succeeded", ended(reason="Completed")), "Completed", "0/1"),
        (pod("Failed", ended(reason="Error")), "Error", "0/1"),
        (pod("Failed", ended(reason="OOMKilled")), "OOMKilled", "0/1"),
        (pod("Failed", ended(exitCode=2)), "ExitCode:2", "0/1"),
        (pod("Pending", waiting("ImagePullBackOff")), "ImagePullBackOff", "0/1"),
        (pod("Running", RUNNING, deleting=True), "Terminating", "1/1"),
        (pod("Succeeded", ended(reason="Completed"), deleting=True), "Completed", "0/1"),
        (pod("Failed", reason="Evicted"), "Evicted", "0/1"),
    ],
)  # fmt: skip
def test_status_and_ready_follow_the_pod_printer(
    obj: dict[str, Any], status: str, ready: str
) -> None:
    cells = pod_row(obj, NOW)
    assert (cells[1], cells[2]) == (ready, status)
    assert cells[4] == "60s"


def initializing(*init_states: dict[str, Any], initialized: bool = False) -> dict[str, Any]:
    """A pod with two init containers in these states and its app container waiting."""
    obj = pod("Pending", waiting("PodInitializing"))
    obj["spec"]["initContainers"] = [{"name": "i0"}, {"name": "i1"}]
    obj["status"]["initContainerStatuses"] = [
        {"name": f"i{i}", "restartCount": 0, **state} for i, state in enumerate(init_states)
    ]
    done = "True" if initialized else "False"
    obj["status"]["conditions"] = [{"type": "Initialized", "status": done}]
    return obj


@pytest.mark.parametrize(
    ("obj", "status"),
    [
        (initializing(waiting("PodInitializing"), waiting("PodInitializing")), "Init:0/2"),
        (initializing(ended(exitCode=0, reason="Completed"), RUNNING), "Init:1/2"),
        (initializing(ended(exitCode=2, reason="Error"), waiting("PodInitializing")),
         "Init:Error"),
        (initializing(ended(exitCode=2), waiting("PodInitializing")), "Init:ExitCode:2"),
        (initializing(waiting("CrashLoopBackOff"), waiting("PodInitializing")),
         "Init:CrashLoopBackOff"),
        (initializing(ended(exitCode=0), ended(exitCode=0), initialized=True),
         "PodInitializing"),
    ],
)  # fmt: skip
def test_init_containers_show_their_progress(obj: dict[str, Any], status: str) -> None:
    assert pod_row(obj, NOW)[2] == status


def test_completed_with_a_container_still_running_reads_running() -> None:
    obj = pod(
        "Running",
        RUNNING,
        ended(reason="Completed"),
        conditions=[{"type": "Ready", "status": "False"}],
    )
    assert pod_row(obj, NOW)[2] == "Running"


def test_restarts_say_when_the_last_one_was() -> None:
    crashed = {
        "restartCount": 2,
        "ready": False,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"finishedAt": "2023-11-14T22:13:15Z"}},
    }
    cells = pod_row(pod("Running", crashed), NOW)
    assert (cells[2], cells[3]) == ("CrashLoopBackOff", "2 (5s ago)")


def test_wide_cells_default_to_none() -> None:
    obj = pod("Pending")
    obj["spec"].pop("nodeName")
    assert pod_row(obj, NOW)[5:] == ["<none>", "<none>", "<none>", "<none>"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "<invalid>"), (-0.5, "0s"), (59, "59s"), (119, "119s"), (125, "2m5s"), (600, "10m"),
     (3 * 3600 + 5, "3h"), (3 * 3600 + 120, "3h2m"), (9 * 3600, "9h"), (49 * 3600, "2d1h"),
     (10 * 86400, "10d"), (800 * 86400, "2y70d"), (9 * 365 * 86400, "9y")],
)  # fmt: skip
def test_human_duration_matches_apimachinery(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_accept_header_negotiation() -> None:
    kubectl = (
        "application/json;as=Table;v=v1;g=meta.k8s.io,"
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    )
    assert wants_table(kubectl)
    assert not wants_table("application/json")
    assert not wants_table("application/json;as=Table;v=v2;g=meta.k8s.io")


def test_table_rows_carry_partial_object_metadata() -> None:
    body = pod_table([pod("Running", RUNNING)], metadata={"resourceVersion": "7"})
    assert body["kind"] == "Table" and body["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in body["columnDefinitions"]][:5] == [
        "Name", "Ready", "Status", "Restarts", "Age",
    ]  # fmt: skip
    assert body["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert "columnDefinitions" not in pod_table([], headers=False)
