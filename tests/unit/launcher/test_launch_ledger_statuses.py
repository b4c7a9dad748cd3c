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


DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * DAY

    def __call__(self) -> float:
        return self.now


def test_with_a_retention_a_try_is_forgotten_an_eighth_after_its_newest_record() -> None:
    clock = Clock()
    ledger = LaunchLedger(retention_s=8 * DAY, clock=clock)
    old, kept = TaskKey("d", "old", "r"), TaskKey("d", "kept", "r")
    ledger.apply(make_record(old, S.FINISHED, "test"))
    ledger.apply(make_record(kept, S.LAUNCHING, "test"))
    clock.now += 5 * DAY
    ledger.apply(make_record(kept, S.FINISHED, "test"))  # its newest record moves it on
    clock.now += 5 * DAY  # 10 days after the first records: beyond 8 days and an eighth
    ledger.apply(make_record(TaskKey("d", "new", "r"), S.LAUNCHING, "test"))
    assert (ledger.status(old), ledger.status(kept)) == (None, S.FINISHED)
    assert len(ledger) == 2
    assert ledger.horizon() == clock.now - 8 * DAY


def test_a_record_written_before_the_horizon_is_not_kept_but_still_answers() -> None:
    clock = Clock()
    ledger = LaunchLedger(retention_s=8 * DAY, clock=clock)
    written_s = clock.now - 20 * DAY  # read back from the topic at a start
    assert ledger.apply(make_record(KEY, S.FINISHED, "test"), written_s) is S.FINISHED
    assert ledger.status(KEY) is None and len(ledger) == 0


def test_an_older_record_read_late_never_weakens_a_newer_one() -> None:
    clock = Clock()
    ledger = LaunchLedger(retention_s=8 * DAY, clock=clock)
    ledger.apply(make_record(KEY, S.FINISHED, "test"))
    ledger.apply(make_record(KEY, S.LAUNCHING, "test"), clock.now - 3 * DAY)
    assert ledger.status(KEY) is S.FINISHED and len(ledger) == 1


def test_without_a_retention_nothing_is_forgotten() -> None:
    clock = Clock()
    ledger = LaunchLedger(clock=clock)
    ledger.apply(make_record(KEY, S.FINISHED, "test"), clock.now - 1_000 * DAY)
    clock.now += 1_000 * DAY
    assert ledger.status(KEY) is S.FINISHED and ledger.horizon() is None
