"""`pipeline bench reducer` in a small form: both sides fold every event, and the second
reducer recovers every task before it is ready."""

from __future__ import annotations

import pytest

from pipeline.bench.reducer import LIFECYCLE, run

pytestmark = pytest.mark.integration


async def test_the_reducer_bench_folds_and_recovers_every_task() -> None:
    n = 2_000
    result = await run(n)
    tasks = n // len(LIFECYCLE)
    assert result.baseline_per_s > 0 and result.subject_per_s > 0
    assert result.extra["recovered_tasks"] == tasks
    assert result.extra["rebuild_states"] == tasks
    assert result.extra["recovery_s"] > 0
