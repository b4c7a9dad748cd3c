"""The CLI's task tables on terminals of common widths: times, states and stages stay whole."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from pipeline.cli.status import render

TASK: dict[str, Any] = {
    "key": {"dag_id": "etl_daily_warehouse", "task_id": "extract_customers_table",
            "run_id": "scheduled__2026-12-01T00:00:00+00:00", "map_index": -1, "try_number": 1},
    "state": "cancelled",
    "executor": "kubernetes",
    "updated_at": "2026-12-01T21:34:32.123456Z",
    "history": [{"source": "celery-dispatcher", "observed_at": "2026-12-01T21:30:00.5Z",
                 "state": "queued", "event_id": "abcdef0123456789"}],
    "reason": "cancelled by alice: the upstream data was wrong and must be reloaded first",
}  # fmt: skip


@pytest.mark.parametrize("width", [80, 110, 160])
def test_the_status_table_fits_and_never_splits_a_time_a_state_or_a_stage(width: int) -> None:
    console = Console(width=width, record=True)
    console.print(render([TASK], True, width))
    shown = console.export_text()
    assert max(len(line.rstrip()) for line in shown.splitlines()) <= width
    for whole in ("2026-12-01 21:34:32", "2026-12-01 21:30:00", "cancelled", "celery-dispatcher"):
        assert whole in shown
    assert ("kubernetes" in shown) is (width >= 110), "narrow terminals drop the executor"
