"""What the dashboard charts: tasks submitted, launched and finished per second, and latencies.

The reducer sees every transition as it folds, so it counts them into one-second buckets of
wall-clock time (the last `window_s` seconds). Latencies (submit -> launched, submit ->
terminal) go into log-scale histograms per bucket rather than raw samples, so the answers of
several replicas merge by adding, and a percentile over any span is a sum of buckets. Pure:
the clock is passed in, nothing here does I/O.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pipeline.messages import TERMINAL_STATES, State, parse_time
from pipeline.reducer.fold import TaskState

# Histogram bucket i holds latencies up to 10 ** (i / STEPS_PER_DECADE) ms: ~26% steps from
# 1 ms to 1000 s; the last bucket takes anything longer.
STEPS_PER_DECADE: Final = 10
BUCKETS: Final = 6 * STEPS_PER_DECADE + 1
LAUNCHED_RANKS: Final = frozenset({State.LAUNCHED, State.RUNNING})
SERIES: Final = ("submitted", "launched", "finished")
LATENCIES: Final = ("to_launch", "to_end")


def latency_bucket(ms: float) -> int:
    if ms <= 1:
        return 0
    return min(BUCKETS - 1, math.ceil(math.log10(ms) * STEPS_PER_DECADE))


def bucket_ms(index: int) -> float:
    """The upper bound of a histogram bucket, in milliseconds."""
    return float(10 ** (index / STEPS_PER_DECADE))


def percentile(histogram: dict[int, int], fraction: float) -> float | None:
    """The upper bound of the bucket holding the given fraction of samples (None if empty)."""
    total = sum(histogram.values())
    if not total:
        return None
    wanted, seen = fraction * total, 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= wanted:
            return bucket_ms(index)
    return bucket_ms(max(histogram))


@dataclass
class Second:
    """One second of wall-clock time: transitions counted and latency histograms."""

    at: int
    counts: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, dict[int, int]] = field(default_factory=dict)

    def count(self, series: str) -> None:
        self.counts[series] = self.counts.get(series, 0) + 1

    def sample(self, name: str, ms: float) -> None:
        histogram = self.latencies.setdefault(name, {})
        index = latency_bucket(ms)
        histogram[index] = histogram.get(index, 0) + 1

    def to_json(self) -> dict[str, Any]:
        latencies = {n: {str(i): c for i, c in h.items()} for n, h in self.latencies.items()}
        return {"at": self.at, "counts": self.counts, "latencies": latencies}


def submitted_at(state: TaskState) -> datetime | None:
    request = state.get("request")
    text = request["submitted_at"] if request else state.get("first_seen")
    return parse_time(text) if text else None


class Timeline:
    """The last `window_s` seconds of transitions, fed by the fold (old state -> new state)."""

    def __init__(self, window_s: int = 600) -> None:
        self.window_s = window_s
        self.seconds: deque[Second] = deque()

    def record(self, before: TaskState | None, after: TaskState, now: float) -> None:
        """Count what changed from `before` to `after` (an applied fold step).

        States are compared as strings (a `State` member equals its value): this runs for
        every applied event, and converting to `State` cost as much as the fold step.
        """
        second = self._second(int(now))
        if before is None:
            second.count("submitted")
        old = before["state"] if before else State.SUBMITTED
        new = after["state"]
        if new == old:
            return
        if new in LAUNCHED_RANKS and old not in LAUNCHED_RANKS:
            second.count("launched")
            self._latency(second, "to_launch", after)
        elif new in TERMINAL_STATES and old not in TERMINAL_STATES:
            second.count("finished")
            self._latency(second, "to_end", after)

    def to_json(self, now: float, seconds: int) -> list[dict[str, Any]]:
        """The buckets of the last `seconds` seconds that saw anything, oldest first."""
        since = int(now) - min(seconds, self.window_s)
        return [s.to_json() for s in self.seconds if s.at > since]

    def _latency(self, second: Second, name: str, state: TaskState) -> None:
        """Sample one latency; an odd timestamp only misses this sample."""
        try:
            start = submitted_at(state)
            if start is None:
                return
            elapsed = (parse_time(state["updated_at"]) - start).total_seconds() * 1000
        except ValueError:
            return
        second.sample(name, max(elapsed, 0.0))

    def _second(self, at: int) -> Second:
        if not self.seconds or self.seconds[-1].at < at:
            self.seconds.append(Second(at))
        while self.seconds[0].at <= at - self.window_s:
            self.seconds.popleft()
        for second in reversed(self.seconds):  # a clock step back lands in a kept bucket
            if second.at <= at:
                return second
        return self.seconds[0]


def merge(answers: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Add up several replicas' timelines, bucket by bucket."""
    merged: dict[int, dict[str, Any]] = {}
    for answer in answers:
        for second in answer:
            into = merged.setdefault(
                second["at"], {"at": second["at"], "counts": {}, "latencies": {}}
            )
            for name, count in second["counts"].items():
                into["counts"][name] = into["counts"].get(name, 0) + count
            for name, histogram in second["latencies"].items():
                target = into["latencies"].setdefault(name, {})
                for index, count in histogram.items():
                    target[index] = target.get(index, 0) + count
    return [merged[at] for at in sorted(merged)]
