"""The acceptance DAG: both executors, a mapped task, a retry, a pod_override, a failure."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, get_current_context, task
from kubernetes.client import models as k8s

OVERRIDE = k8s.V1Pod(
    metadata=k8s.V1ObjectMeta(labels={"override": "yes"}),
    spec=k8s.V1PodSpec(
        containers=[k8s.V1Container(name="base", env=[k8s.V1EnvVar("FROM_OVERRIDE", "yes")])]
    ),
)

with DAG(
    "pipeline_e2e",
    schedule="@once",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    is_paused_upon_creation=False,
    default_args={"retries": 0},
):

    @task(queue="kubernetes")
    def on_kubernetes() -> str:
        return "pod"

    @task(queue="default")
    def on_celery() -> str:
        return "celery"

    @task(queue="kubernetes")
    def mapped(x: int) -> int:
        return x * 2

    @task(queue="kubernetes", retries=1, retry_delay=timedelta(seconds=1))
    def flaky() -> None:
        if get_current_context()["ti"].try_number == 1:
            raise RuntimeError("the first try fails on purpose")

    @task(queue="kubernetes", executor_config={"pod_override": OVERRIDE})
    def overridden() -> None:
        if os.environ.get("FROM_OVERRIDE") != "yes":
            raise RuntimeError("the pod_override did not reach the pod")

    @task(queue="default")
    def broken() -> None:
        raise ValueError("this task fails for good")

    on_kubernetes()
    on_celery()
    mapped.expand(x=[1, 2, 3])
    flaky()
    overridden()
    broken()
