"""Airflow's own KubernetesExecutor, unmodified, against the Kubernetes API emulator: it starts,
adopts a completed pod a dead scheduler left, creates its pods, and its watcher process sees
them succeed. No Airflow database is involved: the test drives the executor's scheduler part
as `sync` does and reads its result queue, where `sync` would write to the database."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from queue import Empty
from typing import Any
from unittest import mock

import pytest

pytest.importorskip("airflow", reason="needs the airflow extra")

from kubernetes import client, config

from pipeline.bench.airflow import airflow_env, hand_over, workloads
from pipeline.bench.launcher import emulator_process

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.timeout(300)]

JOB_ID = "test-scheduler"  # not numeric: the sibling-scheduler check needs no database
DEADLINE_S = 120.0


def core_v1(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))  # type: ignore[no-untyped-call]


def left_behind(api: client.CoreV1Api) -> str:
    """A pod an earlier scheduler launched and never cleaned up; returns once it Succeeded."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "orphan",
            "labels": {"kubernetes_executor": "True", "airflow-worker": "gone-scheduler"},
            "annotations": {"dag_id": "old", "task_id": "t", "run_id": "r", "try_number": "1"},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "base", "image": "apache/airflow:3.2.2"}],
        },
    }
    api.create_namespaced_pod("default", body)
    deadline = time.monotonic() + DEADLINE_S
    while api.read_namespaced_pod("orphan", "default").status.phase != "Succeeded":
        assert time.monotonic() < deadline, "the orphan pod never succeeded"
        time.sleep(0.1)
    return "orphan"


@pytest.fixture
def airflow_home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="airflow-k8s-") as home:
        yield Path(home)


POD_TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata:
  name: placeholder
spec:
  restartPolicy: Never
  containers:
    - name: base
      image: apache/airflow:3.2.2
"""


def drive(executor: Any, pods: int) -> dict[str, Any]:
    """Create the queued pods, then turn watch events into results until the watcher reported
    `pods` pods: name -> result."""
    with suppress(Empty):
        while True:
            executor.kube_scheduler.run_next(executor.task_queue.get_nowait())
            executor.task_queue.task_done()  # end() joins the queue
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + DEADLINE_S
    while len(seen) < pods:
        assert time.monotonic() < deadline, f"the watcher reported only {sorted(seen)}"
        executor.kube_scheduler.sync()
        try:
            result = executor.result_queue.get(timeout=0.2)
        except Empty:
            continue
        seen[result.pod_name] = result
        executor.result_queue.task_done()
    return seen


def run_executor(kubeconfig: Path, home: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from airflow.providers.cncf.kubernetes.executors.kubernetes_executor import (
        KubernetesExecutor,
    )

    api = core_v1(kubeconfig)
    orphan = left_behind(api)
    template = home / "pod_template.yaml"  # as a deployment has one: pods run once
    template.write_text(POD_TEMPLATE)
    env = airflow_env(home, kubeconfig, 2)
    env["AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE"] = str(template)
    with mock.patch.dict(os.environ, env):
        executor = KubernetesExecutor()  # type: ignore[no-untyped-call]
        executor.job_id = JOB_ID
        executor.start()
        try:
            executor._adopt_completed_pods(executor.kube_client)
            assert list(executor.completed) == [("default", orphan)]
            hand_over(executor, workloads("k8s-executor", 2))
            results = drive(executor, pods=3)
        finally:
            executor.end()
    labels = api.read_namespaced_pod(orphan, "default").metadata.labels
    return results, labels


async def test_airflows_kubernetes_executor_adopts_creates_and_watches_its_pods(
    airflow_home: Path,
) -> None:
    async with emulator_process(run_seconds=0.2) as (kubeconfig, _pid):
        results, orphan_labels = await asyncio.to_thread(run_executor, kubeconfig, airflow_home)
    assert orphan_labels["airflow-worker"] == JOB_ID, "adopted by this scheduler"
    assert len(results) == 3 and "orphan" in results
    for name, result in results.items():
        assert result.state is None, f"{name}: {result}"  # the watcher's word for Succeeded
        assert result.namespace == "default"
