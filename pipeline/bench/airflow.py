"""`pipeline bench airflow`: task instances one scheduler loop hands over, per second.

The subject is `pipeline.airflow.PipelineExecutor`: N `ExecuteTask` workloads queued, one
`trigger_tasks` (what a scheduler heartbeat calls), timed until the broker acknowledged every
request. The baseline is Airflow's own KubernetesExecutor on the same workloads against the
project's Kubernetes emulator (its own process, like an API server): one `trigger_tasks` and the
`sync` calls that create the pods (creation batch = N, so one loop may create them all), timed
until N pods exist. Both run in this process, each with its own fresh executor, in rounds that
alternate; medians count. Needs the `airflow` extra.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import orjson

from pipeline.bench import BenchResult
from pipeline.bench.launcher import emulator_process
from pipeline.config import load_settings
from pipeline.kafka import create_topics
from pipeline.sandbox.broker import tansu_broker
from pipeline.sandbox.profile import sandbox_env

DEFAULT_N = 300
ROUNDS = 3
SYNC_DEADLINE_S = 300.0


def airflow_env(home: Path, kubeconfig: Path, n: int) -> dict[str, str]:
    """Airflow's configuration for both executors: no database is needed by either path."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__CORE__PARALLELISM": str(max(n, 32)),
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE": str(kubeconfig),
        "AIRFLOW__KUBERNETES_EXECUTOR__IN_CLUSTER": "False",
        "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": "default",
        "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_PODS_CREATION_BATCH_SIZE": str(n),
        "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_CONTAINER_REPOSITORY": "apache/airflow",
        "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_CONTAINER_TAG": "3.2.2",
        "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS": "False",
    }


def workloads(tag: str, n: int) -> list[Any]:
    from airflow.executors.workloads import BundleInfo, ExecuteTask, TaskInstanceDTO

    return [
        ExecuteTask(
            ti=TaskInstanceDTO(
                id=uuid.uuid4(),
                dag_version_id=uuid.uuid4(),
                dag_id="bench",
                task_id=f"t{i}",
                run_id=tag,
                try_number=1,
                map_index=-1,
                pool_slots=1,
                queue="kubernetes",
                priority_weight=1,
            ),
            dag_rel_path="bench.py",
            bundle_info=BundleInfo(name="dags-folder"),
            token="",
            log_path=None,
        )
        for i in range(n)
    ]


def hand_over(executor: Any, loads: list[Any]) -> None:
    for workload in loads:
        executor.queued_tasks[workload.ti.key] = workload
    executor.trigger_tasks(open_slots=len(loads))


def pipeline_round(n: int) -> float:
    """TIs/s the PipelineExecutor hands to Kafka from one loop (acknowledged by the broker)."""
    from pipeline.airflow import PipelineExecutor

    executor = PipelineExecutor(parallelism=n)
    executor.start()
    try:
        loads = workloads(f"pipeline-{uuid.uuid4().hex[:8]}", n)
        started = time.perf_counter()
        hand_over(executor, loads)
        publisher = executor._publisher
        assert publisher is not None
        if not publisher.flush(SYNC_DEADLINE_S):
            raise RuntimeError("the broker did not acknowledge every request in time")
        elapsed = time.perf_counter() - started
        failed = [error for _, error in publisher.outcomes() if error is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} publishes failed: {failed[0]}")
        return n / elapsed
    finally:
        executor.terminate()


def kubernetes_round(n: int, pods_created: Callable[[], int]) -> float:
    """TIs/s Airflow's KubernetesExecutor turns into pods, from the same hand-over."""
    from airflow.providers.cncf.kubernetes.executors.kubernetes_executor import (
        KubernetesExecutor,
    )

    executor = KubernetesExecutor()  # type: ignore[no-untyped-call]
    executor.job_id = "bench"  # not numeric: the stale-workload check needs no database
    executor.start()
    executor._last_completed_pod_adoption = time.monotonic()  # its adoption reads the database
    try:
        before = pods_created()
        started = time.perf_counter()
        hand_over(executor, workloads(f"kubernetes-{uuid.uuid4().hex[:8]}", n))
        deadline = time.monotonic() + SYNC_DEADLINE_S
        while pods_created() - before < n:
            if time.monotonic() > deadline:
                raise RuntimeError("KubernetesExecutor did not create every pod in time")
            executor.sync()
        return n / (time.perf_counter() - started)
    finally:
        executor.end()


def pod_counter(kubeconfig: Path) -> Callable[[], int]:
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))  # type: ignore[no-untyped-call]

    def count() -> int:
        listed: Any = api.list_namespaced_pod("default", _preload_content=False)
        return len(orjson.loads(listed.data)["items"])

    return count


async def run(n: int) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="bench-airflow-") as tmp, tansu_broker() as broker:
        async with emulator_process() as (kubeconfig, _pid):
            env = airflow_env(Path(tmp), kubeconfig, n) | sandbox_env()
            env["PIPELINE_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            with mock.patch.dict(os.environ, env):  # both executors read their settings there
                settings = load_settings()
                await create_topics(settings.kafka, settings.topic)
                count = pod_counter(kubeconfig)
                subject: list[float] = []
                baseline: list[float] = []
                for _ in range(ROUNDS):
                    subject.append(await asyncio.to_thread(pipeline_round, n))
                    baseline.append(await asyncio.to_thread(kubernetes_round, n, count))
                pods = count()
    return BenchResult(
        name="airflow",
        baseline="KubernetesExecutor: one loop, pods created",
        subject="PipelineExecutor: one loop, requests on Kafka",
        baseline_per_s=statistics.median(baseline),
        subject_per_s=statistics.median(subject),
        params={"n": n, "rounds": ROUNDS, "creation_batch": n},
        extra={
            "subject_rounds_per_s": subject,
            "baseline_rounds_per_s": baseline,
            "pods_created": pods,
        },
    )
