"""The dashboard's timeline: transitions per second and mergeable latency histograms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.messages import State, TaskKey, make_event
from pipeline.reducer.fold import TaskState, fold_event
from pipeline.reducer.timeline import Timeline, bucket_ms, latency_bucket, merge, percentile

KEY = TaskKey("dag", "task", "run")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def step(state: TaskState | None, to: State, seconds: float) -> TaskState:
    folded, _ = fold_event(state, make_event(KEY, "t", to, observed_at=at(seconds)), 10)
    return folded


def test_a_task_counts_once_as_submitted_launched_and_finished() -> None:
    timeline = Timeline()
    queued = step(None, State.QUEUED, 0)
    timeline.record(None, queued, now=100)
    launched = step(queued, State.LAUNCHED, 0.25)
    timeline.record(queued, launched, now=100)
    running = step(launched, State.RUNNING, 0.5)
    timeline.record(launched, running, now=101)
    done = step(running, State.SUCCESS, 2.0)
    timeline.record(running, done, now=102)
    seconds = timeline.to_json(now=102, seconds=60)
    assert [s["at"] for s in seconds] == [100, 101, 102]
    assert seconds[0]["counts"] == {"submitted": 1, "launched": 1}
    assert seconds[1]["counts"] == {}  # launched -> running is no second launch
    assert seconds[2]["counts"] == {"finished": 1}
    to_end = {int(i): n for i, n in seconds[2]["latencies"]["to_end"].items()}
    assert 2000 <= percentile(to_end, 0.5) <= 2000 * 1.26  # type: ignore[operator]


def test_old_seconds_fall_out_of_the_window() -> None:
    timeline = Timeline(window_s=10)
    timeline.record(None, step(None, State.QUEUED, 0), now=100)
    timeline.record(None, step(None, State.QUEUED, 0), now=115)
    assert [s["at"] for s in timeline.to_json(now=115, seconds=60)] == [115]


def test_buckets_bound_their_samples_and_replicas_merge_by_adding() -> None:
    for ms in (0.5, 1, 7, 250, 9_999, 10**7):
        assert ms <= bucket_ms(latency_bucket(ms)) or latency_bucket(ms) == 60
    one = [{"at": 5, "counts": {"finished": 2}, "latencies": {"to_end": {"3": 2}}}]
    two = [
        {"at": 5, "counts": {"finished": 1}, "latencies": {"to_end": {"3": 1, "9": 1}}},
        {"at": 6, "counts": {"submitted": 4}, "latencies": {}},
    ]
    merged = merge([one, two])
    assert merged[0] == {
        "at": 5,
        "counts": {"finished": 3},
        "latencies": {"to_end": {"3": 3, "9": 1}},
    }
    assert merged[1]["counts"] == {"submitted": 4}
    assert percentile({}, 0.5) is None
    assert percentile({3: 99, 9: 1}, 0.99) == bucket_ms(3)
    assert percentile({3: 98, 9: 2}, 0.99) == bucket_ms(9)
