"""`pipeline bench dashboard` in its short form: it measures, and the page is bounded."""

from __future__ import annotations

from pipeline.bench import dashboard


async def test_the_tasks_page_bench_reports_its_ratio_timings_and_payload() -> None:
    dashboard.REPEAT_S = 0.05
    result = await dashboard.run(2000)
    shown = result.to_json()
    assert shown["params"] == {"n": 2000, "page_size": 50}
    assert shown["ratio"] > 0 and shown["page_html_bytes"] > 0 and shown["page_json_bytes"] > 0
    assert {"page_1_ms", "page_1000_ms", "no_match_filter_ms", "run_query_ms", "stats_ms"} <= set(
        shown
    )
