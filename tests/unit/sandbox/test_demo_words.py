"""The demo says why it follows the number of tasks it follows."""

from __future__ import annotations

from pipeline.cli.dev import submitted_line
from pipeline.sandbox.workload import mixed_workload


def test_the_count_followed_is_explained() -> None:
    work = mixed_workload(100)
    assert submitted_line(work) == (
        "submitted 100 requests (5 invalid); following 98 tasks: 95 valid + 3 invalid with a "
        "readable task key (they end dead_lettered; the other 2 only reach the dead-letter topic)"
    )


def test_duplicates_are_counted_apart() -> None:
    work = mixed_workload(40, duplicates=5)
    assert submitted_line(work).startswith(
        "submitted 45 requests (2 invalid, 5 duplicates); following 39 tasks: 38 valid + 1 "
    )
