"""The scheduler-restart DAG: slow tasks on both executors, each leaving one line per run.

Paused at creation: the test unpauses it when it is about to restart the scheduler. Each run of
a task appends to its own file under `$AIRFLOW_HOME/runs`, so a task run twice shows twice.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from airflow.sdk import DAG, get_current_context, task

SLOW_S = 40.0  # long enough for a new scheduler to start and adopt them on a loaded machine

with DAG(
    "pipeline_restart",
    schedule="@once",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    is_paused_upon_creation=True,
    default_args={"retries": 0},
):

    @task(queue="kubernetes")
    def slow_pod(n: int) -> None:
        _run_slowly(f"pod-{n}")

    @task(queue="default")
    def slow_celery() -> None:
        _run_slowly("celery")

    def _run_slowly(name: str) -> None:
        runs = Path(os.environ["AIRFLOW_HOME"]) / "runs"
        runs.mkdir(exist_ok=True)
        ti = get_current_context()["ti"]
        with (runs / name).open("a") as trace:
            trace.write(f"{ti.try_number}\n")
        time.sleep(SLOW_S)

    slow_pod.expand(n=[0, 1])
    slow_celery()
