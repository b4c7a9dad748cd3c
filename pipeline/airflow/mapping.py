"""Airflow 3 workloads to task requests, and pipeline states back to Airflow states (pure).

An `ExecuteTask` carries a TaskInstance DTO, the DAG bundle and a JWT; the task itself runs
as the Task SDK argv (`python -m airflow.sdk.execution_time.execute_workload --json-string
<workload>`) and reports its own state to the Execution API. The pipeline only has to run
that process, so the request is the TI's key, that argv, the TI's queue (the router's
kubernetes/celery split still decides), its priority and its `executor_config`.

Nothing here imports Airflow: a workload is read through the few attributes it has, so the
mapping is tested without a scheduler and the executor stays a thin shell around it.
"""

from __future__ import annotations

from functools import cache
from pathlib import PurePath
from typing import Any, Final, Literal, Protocol

from pipeline.config import TASK_SDK_COMMAND, AirflowSettings
from pipeline.messages import Kind, TaskKey, TaskRequest, make_request, validate

TI_ID_LABEL: Final = "airflow.apache.org/ti-id"
"""Label carrying the TaskInstance's UUID on the pod, so an operator can find it from Airflow."""

EXECUTION_API_ENV: Final = "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"

_INT32 = (-(2**31), 2**31 - 1)

AirflowOutcome = Literal["running", "success", "failed"]

_OUTCOMES: Final[dict[str, AirflowOutcome]] = {
    "running": "running",
    "success": "success",
    "failed": "failed",
    "cancelled": "failed",
    "dead_lettered": "failed",
}
"""Pipeline state -> what the executor tells Airflow; absent states are still queued.

`success` means the Task SDK process exited cleanly, as for Airflow's own executors: the
task's real outcome reaches Airflow through the Execution API, not through the executor."""


class TaskInstanceLike(Protocol):
    """The fields of Airflow's `TaskInstanceDTO` the mapping reads."""

    id: Any
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    queue: str
    priority_weight: int
    executor_config: dict[str, Any] | None


class WorkloadLike(Protocol):
    """Airflow's `workloads.ExecuteTask`, as far as the mapping needs it."""

    @property
    def ti(self) -> TaskInstanceLike: ...

    def model_dump_json(self) -> str: ...


def task_key(ti: Any) -> TaskKey:
    """The pipeline key of a TaskInstance (a DTO, an ORM row or a TaskInstanceKey)."""
    return TaskKey(ti.dag_id, ti.task_id, ti.run_id, int(ti.map_index), int(ti.try_number))


def task_sdk_command(workload: WorkloadLike) -> list[str]:
    """The argv that runs `workload`, as Airflow's KubernetesExecutor builds it."""
    return [*TASK_SDK_COMMAND, workload.model_dump_json()]


@cache
def _api_client() -> Any:
    from kubernetes.client import ApiClient

    return ApiClient()


def pod_override_dict(override: Any) -> dict[str, Any] | None:
    """A `pod_override` (a V1Pod, or a dict already in API field names) as a JSON object."""
    if override is None:
        return None
    serialised = _api_client().sanitize_for_serialization(override)
    if not isinstance(serialised, dict):
        raise ValueError(f"pod_override must be a V1Pod or a dict, got {type(override).__name__}")
    return serialised


def executor_config_of(ti: TaskInstanceLike) -> tuple[dict[str, Any] | None, str | None]:
    """(the request's executor_config, its pod_template name) from the TI's executor_config.

    `pod_template_file` names a template the launcher knows (`<name>.yaml` in
    `launcher.pod_template_dir`): its file stem is the name.
    """
    config = ti.executor_config or {}
    override = pod_override_dict(config.get("pod_override"))
    template = config.get("pod_template_file")
    name = PurePath(str(template)).stem if template else None
    return ({"pod_override": override} if override else None), name


def task_request(workload: WorkloadLike, settings: AirflowSettings) -> TaskRequest:
    """The TaskRequest for one ExecuteTask; raises InvalidMessage (or ValueError) if it has none.

    Validated here, so a TI the pipeline would dead-letter fails back to Airflow at once.
    """
    ti = workload.ti
    env = dict(settings.task_env)
    if settings.execution_api_url:
        env[EXECUTION_API_ENV] = settings.execution_api_url
    executor_config, pod_template = executor_config_of(ti)
    request = make_request(
        task_key(ti),
        task_sdk_command(workload),
        ti.queue,
        priority=min(max(int(ti.priority_weight), _INT32[0]), _INT32[1]),
        image=settings.image,
        env=env or None,
        executor_config=executor_config,
        pod_template=pod_template,
        labels={TI_ID_LABEL: str(ti.id)},
    )
    validate(Kind.TASK_REQUEST, request)
    return request


def airflow_outcome(state: str) -> AirflowOutcome | None:
    """What a pipeline state means to Airflow: running, success, failed, or None (queued)."""
    return _OUTCOMES.get(state)


def failure_info(task_state: dict[str, Any]) -> str:
    """A one-line reason for a failed try, as Airflow shows it in the executor event."""
    reason = task_state.get("reason") or ""
    where = task_state.get("pod_name") or task_state.get("celery_task_id") or ""
    state = task_state.get("state", "failed")
    return "; ".join(part for part in (f"pipeline: {state}", reason, where) if part)
