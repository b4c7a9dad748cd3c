"""Benchmarks: every figure is a ratio against a baseline measured in the same run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BenchResult:
    """One benchmark's outcome; `ratio` is subject throughput over baseline throughput."""

    name: str
    baseline: str
    subject: str
    baseline_per_s: float
    subject_per_s: float
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.subject_per_s / self.baseline_per_s if self.baseline_per_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "baseline": self.baseline,
            "subject": self.subject,
            "baseline_per_s": round(self.baseline_per_s, 1),
            "subject_per_s": round(self.subject_per_s, 1),
            "ratio": round(self.ratio, 3),
            "params": self.params,
            **self.extra,
        }
