"""`pipeline bench e2e` in its smallest form: one low rate, every task accounted for."""

from __future__ import annotations

import pytest

from pipeline.bench import end_to_end
from pipeline.stages import STAGES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def test_one_step_times_every_task_and_charges_every_process() -> None:
    options = end_to_end.Options(rates=[10], duration_s=1, drain_s=60)
    result = await end_to_end.run(options=options)
    [step] = result.extra["steps"]
    assert step["tasks"] == 10
    assert step["not_terminal"] == 0 and step["not_successful"] == 0
    latency = step["latency_from_due"]
    assert [latency[m]["n"] for m in end_to_end.MILESTONES] == [10] * 4
    assert (
        latency["queued"]["p50_ms"]
        <= latency["launched"]["p50_ms"]
        <= latency["terminal"]["p50_ms"]
    )
    assert all(
        step["hops_from_event_times"][hop]["n"] == 10 for hop in step["hops_from_event_times"]
    )
    charged = set(step["cpu_ms_per_task"])
    assert set(STAGES) | {"celery-worker", "broker-0", "bench+emulator", "total"} <= charged
    assert all(start > 0 and end > 0 for start, end in step["rss_mb"].values())
    shown = result.to_json()
    assert shown["subject_per_s"] in (0.0, 10.0) and shown["baseline_per_s"] > 0
    assert shown["params"]["executor"] == "kubernetes"
