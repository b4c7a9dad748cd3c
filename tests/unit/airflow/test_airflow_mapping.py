"""Airflow 3 workloads -> task requests, and pipeline states -> Airflow outcomes."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from airflow.executors.workloads import BundleInfo, ExecuteTask, TaskInstanceDTO
from kubernetes.client import models as k8s

from pipeline.airflow.mapping import (
    EXECUTION_API_ENV,
    TI_ID_LABEL,
    airflow_outcome,
    failure_info,
    pod_override_dict,
    task_request,
)
from pipeline.config import TASK_SDK_COMMAND, AirflowSettings, SecuritySettings
from pipeline.launcher.builder import PodSpecBuilder
from pipeline.launcher.policy import SecurityPolicy
from pipeline.launcher.template import TemplateLibrary
from pipeline.messages import InvalidMessage, Kind, TaskKey, decode_request, encode, validate
from pipeline.pods import pod_name
from pipeline.security import command_violation

SETTINGS = AirflowSettings(execution_api_url="http://api:8080/execution/")


def workload(**ti: Any) -> ExecuteTask:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "dag_version_id": uuid.uuid4(),
        "dag_id": "etl",
        "task_id": "extract",
        "run_id": "manual__2026-01-01T00:00:00+00:00",
        "try_number": 1,
        "map_index": -1,
        "pool_slots": 1,
        "queue": "kubernetes",
        "priority_weight": 3,
    }
    return ExecuteTask(
        ti=TaskInstanceDTO(**(fields | ti)),
        dag_rel_path="etl.py",
        bundle_info=BundleInfo(name="dags-folder"),
        token="secret-jwt",
        log_path="dag_id=etl/run_id=x/task_id=extract/attempt=1.log",
    )


def test_request_carries_key_argv_queue_priority_and_ti_id() -> None:
    w = workload()
    request = task_request(w, SETTINGS)
    assert TaskKey.from_wire(request["key"]) == TaskKey(
        "etl", "extract", "manual__2026-01-01T00:00:00+00:00", -1, 1
    )
    assert request["command"][:4] == list(TASK_SDK_COMMAND)
    assert ExecuteTask.model_validate_json(request["command"][4]) == w
    assert request["queue"] == "kubernetes"
    assert request["priority"] == 3
    assert request["labels"] == {TI_ID_LABEL: str(w.ti.id)}
    assert request["env"] == {EXECUTION_API_ENV: "http://api:8080/execution/"}
    assert "executor_config" not in request
    assert decode_request(encode(request)) == request  # what the router will accept


def test_unicode_ids_round_trip_exactly() -> None:
    w = workload(dag_id="ünïcødé_dag", task_id="задача.τ", run_id="manual__日本 run")
    request = task_request(w, SETTINGS)
    assert request["key"]["dag_id"] == "ünïcødé_dag"
    assert request["key"]["task_id"] == "задача.τ"
    assert orjson.loads(request["command"][4])["ti"]["run_id"] == "manual__日本 run"


def test_mapped_and_unmapped_indexes() -> None:
    assert task_request(workload(map_index=-1), SETTINGS)["key"]["map_index"] == -1
    assert task_request(workload(map_index=7), SETTINGS)["key"]["map_index"] == 7
    first = TaskKey.from_wire(task_request(workload(map_index=0), SETTINGS)["key"])
    second = TaskKey.from_wire(task_request(workload(map_index=1), SETTINGS)["key"])
    assert first.partition_key != second.partition_key
    assert pod_name(first) != pod_name(second)


def test_longest_ids_airflow_allows_make_a_valid_request_and_pod_name() -> None:
    w = workload(dag_id="d" * 250, task_id="t" * 250, run_id="r" * 250, try_number=2)
    request = task_request(w, SETTINGS)
    key = TaskKey.from_wire(request["key"])
    assert (len(key.dag_id), len(key.task_id), len(key.run_id)) == (250, 250, 250)
    assert len(pod_name(key)) <= 63


def test_ids_beyond_the_contract_fail_before_publishing() -> None:
    with pytest.raises(InvalidMessage):
        task_request(workload(task_id="t" * 251), SETTINGS)
    with pytest.raises(InvalidMessage):
        task_request(workload(queue="has space"), SETTINGS)


def test_priority_weight_is_clamped_to_the_schema_range() -> None:
    assert task_request(workload(priority_weight=2**40), SETTINGS)["priority"] == 2**31 - 1
    assert task_request(workload(priority_weight=-(2**40)), SETTINGS)["priority"] == -(2**31)


V1_POD = k8s.V1Pod(
    metadata=k8s.V1ObjectMeta(labels={"team": "data"}),
    spec=k8s.V1PodSpec(
        containers=[
            k8s.V1Container(
                name="base",
                resources=k8s.V1ResourceRequirements(limits={"memory": "256Mi"}),
                env=[k8s.V1EnvVar(name="STAGE", value="override")],
            )
        ]
    ),
)

DICT_POD = {
    "metadata": {"labels": {"team": "data"}},
    "spec": {
        "containers": [
            {
                "name": "base",
                "resources": {"limits": {"memory": "256Mi"}},
                "env": [{"name": "STAGE", "value": "override"}],
            }
        ]
    },
}


@pytest.mark.parametrize("override", [V1_POD, DICT_POD], ids=["V1Pod", "dict"])
def test_pod_override_as_v1pod_or_dict_becomes_the_same_api_json(override: Any) -> None:
    request = task_request(workload(executor_config={"pod_override": override}), SETTINGS)
    assert request["executor_config"] == {"pod_override": DICT_POD}
    validate(Kind.TASK_REQUEST, request)


def test_pod_override_reaches_the_pod_the_launcher_builds() -> None:
    request = task_request(workload(executor_config={"pod_override": V1_POD}), SETTINGS)
    builder = PodSpecBuilder(
        TemplateLibrary(None, None),
        SecurityPolicy.from_settings(SecuritySettings()),
        namespace="default",
        instance="test",
        worker_image="apache/airflow:3.2.2",
    )
    pod = builder.build(request)
    [container] = pod["spec"]["containers"]
    assert container["resources"] == {"limits": {"memory": "256Mi"}}
    assert {"name": "STAGE", "value": "override"} in container["env"]
    assert {"name": EXECUTION_API_ENV, "value": SETTINGS.execution_api_url} in container["env"]
    assert pod["metadata"]["labels"]["team"] == "data"
    assert pod["metadata"]["labels"][TI_ID_LABEL] == str(request["labels"][TI_ID_LABEL])


def test_pod_template_file_names_a_launcher_template() -> None:
    config = {"pod_template_file": "/opt/airflow/templates/gpu.yaml"}
    assert task_request(workload(executor_config=config), SETTINGS)["pod_template"] == "gpu"


def test_a_pod_override_that_is_no_pod_is_refused() -> None:
    with pytest.raises(ValueError, match="V1Pod or a dict"):
        pod_override_dict("not a pod")


def test_default_allowlist_admits_the_task_sdk_argv_and_nothing_near_it() -> None:
    allowed = SecuritySettings().allowed_commands
    argv = task_request(workload(), SETTINGS)["command"]
    assert command_violation(argv, allowed) is None
    assert command_violation(["python", "-m", "airflow.sdk.execution_time.other"], allowed)
    assert command_violation(["python", "-c", "import os"], allowed)
    assert command_violation(["python", "-m", "airflow.sdk.execution_time.execute_workload",
                              "--json-path", "/etc/passwd"], allowed)  # fmt: skip


def test_task_env_and_image_settings_reach_the_request() -> None:
    settings = AirflowSettings(task_env={"AIRFLOW_HOME": "/opt/airflow"}, image="airflow:3")
    request = task_request(workload(), settings)
    assert request["env"] == {"AIRFLOW_HOME": "/opt/airflow"}
    assert request["image"] == "airflow:3"


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        ("submitted", None),
        ("queued", None),
        ("launched", None),
        ("running", "running"),
        ("success", "success"),
        ("failed", "failed"),
        ("cancelled", "failed"),
        ("dead_lettered", "failed"),
    ],
)
def test_pipeline_state_to_airflow(state: str, outcome: str | None) -> None:
    assert airflow_outcome(state) == outcome


def test_failure_info_names_state_reason_and_where() -> None:
    state = {"state": "failed", "reason": "exit code 1", "pod_name": "etl-extract-1-abc"}
    assert failure_info(state) == "pipeline: failed; exit code 1; etl-extract-1-abc"
    assert failure_info({"state": "dead_lettered"}) == "pipeline: dead_lettered"
