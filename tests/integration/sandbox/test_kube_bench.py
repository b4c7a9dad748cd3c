"""`pipeline bench kube` measures both sides over the same creates."""

from __future__ import annotations

import pytest

from pipeline.bench import kube as kube_bench
from pipeline.bench.kube import WARMUP

pytestmark = pytest.mark.integration


async def test_bench_creates_every_pod_on_both_sides() -> None:
    result = await kube_bench.run(n=40, concurrency=4)
    assert result.baseline_per_s > 0 and result.subject_per_s > 0
    assert result.extra["pods_stored"] == 40 + WARMUP
    assert result.to_json()["params"] == {"n": 40, "concurrency": 4, "mode": "simulate"}
