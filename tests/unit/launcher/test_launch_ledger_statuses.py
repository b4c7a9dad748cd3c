"""The launcher's view of the launch ledger: the status that stands for each try."""

from __future__ import annotations

import pytest

from pipeline.launches import LaunchLedger, LaunchStatus, make_record
from pipeline.messages import TaskKey

KEY = TaskKey("dag", "task", "run", 2, 1)
S = LaunchStatus


@pytest.mark.parametrize(
    ("written", "stands"),
    [
        ([S.LAUNCHING], S.LAUNCHING),
        ([S.LAUNCHING, S.FINISHED], S.FINISHED),
        ([S.FINISHED, S.LAUNCHING], S.FINISHED),  # a re-delivered request never undoes the end
        ([S.LAUNCHING, S.CANCELLED, S.LAUNCHING], S.CANCELLED),
        ([S.FINISHED, S.CANCELLED], S.CANCELLED),
        ([S.CANCELLED, S.FINISHED], S.CANCELLED),
    ],
)
def test_the_highest_status_written_stands(
    written: list[LaunchStatus], stands: LaunchStatus
) -> None:
    ledger = LaunchLedger()
    for status in written:
        assert ledger.apply(make_record(KEY, status, "test")) is ledger.status(KEY)
    assert ledger.status(KEY) is stands


def test_each_try_is_its_own_entry() -> None:
    ledger = LaunchLedger()
    ledger.apply(make_record(KEY, S.FINISHED, "test"))
    assert ledger.status(TaskKey("dag", "task", "run", 2, 2)) is None
    assert ledger.status(TaskKey("dag", "task", "run", 3, 1)) is None
    assert len(ledger) == 1
