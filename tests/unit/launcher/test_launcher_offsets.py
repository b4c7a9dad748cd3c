"""Commit only the highest contiguous finished offset, whatever order requests finish in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.launcher.offsets import OffsetTracker


def test_nothing_committable_until_the_first_offset_finishes() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.begin(offset)
    tracker.finish(12)
    tracker.finish(11)
    assert tracker.committable is None
    tracker.finish(10)
    assert tracker.committable == 13
    assert tracker.pending == 0


def test_an_unfinished_offset_holds_back_the_commit() -> None:
    tracker = OffsetTracker()
    for offset in (0, 1, 2, 3):
        tracker.begin(offset)
    for offset in (0, 1, 3):
        tracker.finish(offset)
    assert tracker.committable == 2
    tracker.finish(2)
    assert tracker.committable == 4


def test_unknown_and_repeated_finishes_are_ignored() -> None:
    tracker = OffsetTracker()
    tracker.begin(5)
    tracker.finish(4)
    tracker.finish(7)
    assert tracker.committable is None
    tracker.finish(5)
    tracker.finish(5)
    assert tracker.committable == 6
    tracker.begin(7)
    assert tracker.committable == 6


def test_offsets_must_be_begun_in_order() -> None:
    tracker = OffsetTracker()
    tracker.begin(3)
    with pytest.raises(ValueError):
        tracker.begin(3)


@given(
    st.lists(st.integers(0, 1000), min_size=1, max_size=60, unique=True).map(sorted),
    st.data(),
)
def test_committable_never_passes_an_unfinished_offset(
    offsets: list[int], data: st.DataObject
) -> None:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.begin(offset)
    order = data.draw(st.permutations(offsets))
    finished: set[int] = set()
    for offset in order:
        tracker.finish(offset)
        finished.add(offset)
        unfinished = [o for o in offsets if o not in finished]
        committable = tracker.committable
        if unfinished:
            assert committable is None or committable <= unfinished[0]
        if offsets[0] in finished:
            prefix = [o for o in offsets if not unfinished or o < unfinished[0]]
            assert committable == prefix[-1] + 1
    assert tracker.committable == offsets[-1] + 1
