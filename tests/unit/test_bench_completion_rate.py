"""The e2e benchmark's achieved rate: completions over their own span, not over the latency."""

from __future__ import annotations

import pytest

from pipeline.bench.end_to_end import completion_rate


def test_a_pipeline_that_keeps_up_shows_the_offered_rate_whatever_its_latency() -> None:
    offered = 100.0
    ends = [0.8 + i / offered for i in range(500)]  # every task 800 ms late, none behind
    assert completion_rate(ends, offered) == pytest.approx(offered)


def test_jitter_in_the_tails_does_not_read_as_falling_behind() -> None:
    offered = 250.0
    latency = [0.15 if i < 10 else 0.6 if i > 990 else 0.3 for i in range(1000)]
    ends = sorted(i / offered + latency[i] for i in range(1000))
    assert completion_rate(ends, offered) == pytest.approx(offered, rel=0.01)


def test_a_pipeline_that_falls_behind_shows_the_rate_it_finishes_at() -> None:
    ends = [0.1 + i / 40.0 for i in range(200)]  # offered 100/s, finishing 40/s
    assert completion_rate(ends, 100.0) == pytest.approx(40.0)


def test_bunched_completions_never_read_above_the_offered_rate() -> None:
    assert completion_rate([1.0] * 50, 100.0) == 100.0


@pytest.mark.parametrize(("ends", "expected"), [([], 0.0), ([3.0], 100.0)])
def test_fewer_than_two_completions(ends: list[float], expected: float) -> None:
    assert completion_rate(ends, 100.0) == expected
