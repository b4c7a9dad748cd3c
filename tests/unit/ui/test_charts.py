"""The overview's chart series and the SSE wire format (pure)."""

from __future__ import annotations

from pipeline.ui.charts import chart_data, window_rates
from pipeline.ui.live import sse_message


def test_chart_series_average_per_window_and_gap_where_nothing_finished() -> None:
    seconds = [
        {"at": 996, "counts": {"submitted": 10, "finished": 5}, "latencies": {"to_end": {"20": 5}}},
        {"at": 999, "counts": {"finished": 5}, "latencies": {"to_end": {"30": 5}}},
        {"at": 400, "counts": {"submitted": 99}, "latencies": {}},  # outside the span
    ]
    data = chart_data(seconds, now=1000, span_s=20, step_s=5)
    assert data["x"] == [985, 990, 995, 1000]
    assert data["throughput"]["submitted"] == [0.0, 0.0, 2.0, 0.0]
    assert data["throughput"]["finished"] == [0.0, 0.0, 2.0, 0.0]
    assert data["latency"]["to_end_p50"][:2] == [None, None]
    assert data["latency"]["to_end_p50"][2] == 100.0  # bucket 20: 10 ** 2 ms
    assert data["latency"]["to_end_p99"][2] == 1000.0
    assert window_rates(seconds, now=1000, window_s=10) == {
        "submitted": 1.0, "launched": 0.0, "finished": 1.0,
    }  # fmt: skip


def test_every_line_of_an_event_gets_its_own_data_field() -> None:
    assert sse_message("counts", "<b>\n</b>") == b"event: counts\ndata: <b>\ndata: </b>\n\n"
