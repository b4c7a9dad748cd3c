"""Pod documents become task states with precise reasons, and events with stable ids."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest

from pipeline.messages import Kind, State, TaskKey, validate
from pipeline.pods import CANCEL_ANNOTATION
from pipeline.watcher.translate import (
    PodObservation,
    observe,
    pending_seconds,
    timed_out,
    vanished,
)

from .pod_docs import KEY, pod, terminated, unschedulable, waiting


def seen(document: dict[str, object], *, deleted: bool = False) -> PodObservation:
    observation = observe(document, deleted=deleted)
    assert observation is not None
    return observation


def test_pods_without_task_annotations_are_not_observed() -> None:
    assert observe(pod("Running", managed=False)) is None


def test_unknown_phase_says_nothing() -> None:
    assert observe(pod("Unknown")) is None


def test_identity_comes_from_annotations_and_metadata() -> None:
    observation = seen(pod("Running", uid="u-7", rv="42"))
    assert observation.key == KEY
    assert (observation.uid, observation.resource_version) == ("u-7", "42")
    assert observation.namespace == "default"
    assert observation.state is State.RUNNING


@pytest.mark.parametrize(
    ("document", "state", "reason"),
    [
        (pod("Pending"), State.LAUNCHED, None),
        (pod("Pending", containers=[waiting("ContainerCreating")]), State.LAUNCHED,
         "ContainerCreating"),
        (pod("Pending", containers=[waiting("ErrImagePull", "pull failed")]), State.LAUNCHED,
         "ErrImagePull"),
        (pod("Pending", conditions=[unschedulable("0/1 nodes are available")]), State.LAUNCHED,
         "Unschedulable: 0/1 nodes are available"),
        (pod("Pending", containers=[waiting("ImagePullBackOff", 'Back-off pulling image "x"')]),
         State.FAILED, 'ImagePullBackOff: Back-off pulling image "x"'),
        (pod("Pending", containers=[waiting("CreateContainerConfigError", "no secret")]),
         State.FAILED, "CreateContainerConfigError: no secret"),
        (pod("Running"), State.RUNNING, None),
    ],
)  # fmt: skip
def test_pending_and_running(document: dict[str, object], state: State, reason: str) -> None:
    observation = seen(document)
    assert (observation.state, observation.reason) == (state, reason)


def test_success_carries_exit_code_zero() -> None:
    observation = seen(pod("Succeeded", containers=[terminated(0, "Completed")]))
    assert (observation.state, observation.reason, observation.exit_code) == (
        State.SUCCESS, None, 0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("document", "reason", "exit_code"),
    [
        (pod("Failed", containers=[terminated(3)]), "exit code 3", 3),
        (pod("Failed", containers=[terminated(1, message="boom\n")]), "exit code 1: boom", 1),
        (pod("Failed", containers=[terminated(128, "StartError", message="no such file")]),
         "exit code 128 (StartError): no such file", 128),
        (pod("Failed", containers=[terminated(137, "OOMKilled")]), "OOMKilled", 137),
        (pod("Failed", containers=[terminated(137)], reason="Evicted",
             message="The node was low on resource: memory. "),
         "Evicted: The node was low on resource: memory.", 137),
        (pod("Failed", reason="DeadlineExceeded",
             message="Pod was active on the node longer than the specified deadline"),
         "DeadlineExceeded: Pod was active on the node longer than the specified deadline", None),
        (pod("Failed", containers=[terminated(143)], deleting=True),
         "pod deleted while running: exit code 143", 143),
        (pod("Failed"), "pod failed", None),
        (pod("Failed", containers=[waiting("PodInitializing")],
             init_containers=[terminated(0, "Completed", name="fetch"),
                              terminated(2, message="no repo", name="sync")]),
         "init container sync: exit code 2: no repo", 2),
    ],
)  # fmt: skip
def test_failures_say_why(document: dict[str, object], reason: str, exit_code: int) -> None:
    observation = seen(document)
    assert (observation.state, observation.reason, observation.exit_code) == (
        State.FAILED, reason, exit_code,
    )  # fmt: skip


def test_an_init_container_in_crash_loop_fails_the_pending_pod() -> None:
    stuck = waiting("CrashLoopBackOff", "back-off 40s restarting failed container", "sync")
    document = pod("Pending", containers=[waiting("PodInitializing")], init_containers=[stuck])
    observation = seen(document)
    assert (observation.state, observation.reason) == (
        State.FAILED, "init container sync: CrashLoopBackOff: back-off 40s restarting failed "
        "container",
    )  # fmt: skip


def test_main_container_failure_is_reported_first() -> None:
    containers = [terminated(2, name="sidecar"), terminated(5, name="base")]
    observation = seen(pod("Failed", containers=containers))
    assert (observation.reason, observation.exit_code) == ("exit code 5", 5)


def test_a_sidecar_failure_is_reported_when_the_main_container_succeeded() -> None:
    containers = [terminated(0, "Completed", name="base"), terminated(9, name="sidecar")]
    assert seen(pod("Failed", containers=containers)).exit_code == 9


@pytest.mark.parametrize("phase", ["Pending", "Running"])
def test_deleted_before_finishing_fails(phase: str) -> None:
    observation = seen(pod(phase), deleted=True)
    assert observation.state is State.FAILED
    assert observation.reason == f"pod deleted while {phase.lower()}"


def test_deleted_after_finishing_keeps_its_end() -> None:
    observation = seen(pod("Succeeded", containers=[terminated(0, "Completed")]), deleted=True)
    assert observation.state is State.SUCCESS


def test_events_are_valid_and_complete() -> None:
    event = seen(pod("Failed", containers=[terminated(137, "OOMKilled")], rv="99")).to_event()
    validate(Kind.TASK_EVENT, event)
    assert event["source"] == "watcher"
    assert event["executor"] == "kubernetes"
    assert event["state"] == "failed"
    assert event["reason"] == "OOMKilled"
    assert event["exit_code"] == 137
    assert event["resource_version"] == "99"
    assert event["pod_name"] == pod()["metadata"]["name"]  # type: ignore[index]
    assert TaskKey.from_wire(event["key"]) == KEY


def test_the_same_state_seen_at_two_versions_is_one_fact() -> None:
    first = seen(pod("Running", rv="10")).to_event()
    again = seen(pod("Running", rv="17")).to_event()
    assert first["event_id"] == again["event_id"]
    assert first["resource_version"] != again["resource_version"]


def test_each_state_and_each_pod_is_a_different_fact() -> None:
    ids = {
        seen(pod("Pending")).to_event()["event_id"],
        seen(pod("Running")).to_event()["event_id"],
        seen(pod("Succeeded")).to_event()["event_id"],
        seen(pod("Running", uid="recreated")).to_event()["event_id"],
    }
    assert len(ids) == 4


def test_vanished_pod_fails_with_its_last_state() -> None:
    gone = vanished(seen(pod("Running")))
    assert gone.state is State.FAILED
    assert gone.reason == "pod deleted while the watch was away (last seen running)"


def test_timed_out_pod_names_the_timeout_and_what_it_waited_for() -> None:
    stuck = seen(pod("Pending", conditions=[unschedulable("0/1 nodes are available")]))
    failed = timed_out(stuck, 300)
    assert failed.state is State.FAILED
    assert failed.reason == (
        "pending timeout: still Pending after 300s (Unschedulable: 0/1 nodes are available)"
    )


def test_pending_seconds_counts_from_creation() -> None:
    observation = seen(pod("Pending", created="2026-01-01T00:00:00Z"))
    assert pending_seconds(observation, datetime(2026, 1, 1, 0, 1, tzinfo=UTC)) == 60
    assert pending_seconds(replace(observation, created_at=None)) == 0


def test_long_reasons_are_clipped_to_the_schema_limit() -> None:
    observation = seen(pod("Failed", containers=[terminated(1, message="x" * 10_000)]))
    validate(Kind.TASK_EVENT, observation.to_event())
    assert len(observation.reason or "") <= 1024


def test_wire_round_trip() -> None:
    observation = seen(pod("Pending", containers=[waiting("ContainerCreating")]))
    assert PodObservation.from_wire(observation.to_wire()) == observation


CANCEL = {"reason": "runaway", "requested_by": "alice", "requested_at": "2026-01-01T00:04:00Z"}


def cancelled_pod(phase: str, **fields: object) -> dict[str, object]:
    document = pod(phase, **fields)  # type: ignore[arg-type]
    document["metadata"]["annotations"][CANCEL_ANNOTATION] = orjson.dumps(CANCEL).decode()  # type: ignore[index]
    return document


@pytest.mark.parametrize(
    ("document", "deleted"),
    [
        (cancelled_pod("Failed", containers=[terminated(143)], deleting=True), False),
        (cancelled_pod("Running", deleting=True), True),
        (cancelled_pod("Pending"), True),
    ],
)
def test_a_cancelled_pods_end_is_reported_cancelled_with_who_asked(
    document: dict[str, object], deleted: bool
) -> None:
    observation = seen(document, deleted=deleted)
    assert observation.state is State.CANCELLED
    event = observation.to_event()
    validate(Kind.TASK_EVENT, event)
    assert (event["reason"], event["cancel"]) == ("cancelled by alice: runaway", CANCEL)


def test_a_cancelled_pod_still_running_or_finished_on_its_own_says_so() -> None:
    assert seen(cancelled_pod("Running", deleting=True)).state is State.RUNNING
    done = seen(cancelled_pod("Succeeded", containers=[terminated(0, "Completed")]))
    assert done.state is State.SUCCESS and "cancel" not in done.to_event()
    assert vanished(seen(cancelled_pod("Running", deleting=True))).state is State.CANCELLED
