"""`pipeline bench airflow` in its smallest form: both executors hand over every TI."""

from __future__ import annotations

import pytest

pytest.importorskip("airflow", reason="needs the airflow extra")

from pipeline.bench import airflow as airflow_bench

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.timeout(600)]


async def test_both_executors_hand_over_every_task_instance() -> None:
    result = await airflow_bench.run(n=5)
    assert result.baseline_per_s > 0 and result.subject_per_s > 0
    assert result.extra["pods_created"] == 5 * airflow_bench.ROUNDS  # only the baseline makes pods
    assert len(result.extra["subject_rounds_per_s"]) == airflow_bench.ROUNDS
