"""The overview's chart series, from the reducer's per-second timeline (pure).

Throughput is averaged over windows of `step_s` seconds so the lines do not jitter; latency
percentiles come from each window's summed histograms (None where nothing finished, which
the chart draws as a gap). The x axis is wall-clock seconds, as uPlot expects.
"""

from __future__ import annotations

from typing import Any

from pipeline.reducer.timeline import LATENCIES, SERIES, percentile


def chart_data(
    seconds: list[dict[str, Any]], now: float, span_s: int = 300, step_s: int = 5
) -> dict[str, Any]:
    """`{"x": [...], "throughput": {series: [...]}, "latency": {"to_launch_p50": [...], ...}}`."""
    end = int(now) // step_s * step_s
    starts = list(range(end - span_s + step_s, end + step_s, step_s))
    counts = {name: [0.0] * len(starts) for name in SERIES}
    histograms: list[dict[str, dict[int, int]]] = [{} for _ in starts]
    first = starts[0]
    for second in seconds:
        slot = (second["at"] - first) // step_s
        if not 0 <= slot < len(starts):
            continue
        for name, count in second["counts"].items():
            if name in counts:
                counts[name][slot] += count / step_s
        for name, histogram in second["latencies"].items():
            into = histograms[slot].setdefault(name, {})
            for index, count in histogram.items():
                into[int(index)] = into.get(int(index), 0) + count
    latency: dict[str, list[float | None]] = {}
    for name in LATENCIES:
        for label, fraction in (("p50", 0.5), ("p99", 0.99)):
            latency[f"{name}_{label}"] = [percentile(h.get(name, {}), fraction) for h in histograms]
    return {"x": starts, "throughput": counts, "latency": latency}


def window_rates(seconds: list[dict[str, Any]], now: float, window_s: int = 10) -> dict[str, float]:
    """Per-second rates over the last `window_s` seconds, for the headline numbers."""
    since = int(now) - window_s
    totals = dict.fromkeys(SERIES, 0)
    for second in seconds:
        if second["at"] > since:
            for name in SERIES:
                totals[name] += second["counts"].get(name, 0)
    return {name: total / window_s for name, total in totals.items()}
