"""PipelineExecutor's bookkeeping against a scripted reducer API and publisher (no broker)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.utils.state import TaskInstanceState

from pipeline.airflow import PipelineExecutor
from pipeline.airflow.mapping import task_key
from pipeline.client import ApiUnavailable, CancelAnswer, UnknownTask
from pipeline.messages import TaskKey
from tests.unit.airflow.test_airflow_mapping import workload


@dataclass
class ScriptedApi:
    """The reducer's answers, keyed by task key; records what was asked of it."""

    states: dict[TaskKey, dict[str, Any]] = field(default_factory=dict)
    cancelled: list[TaskKey] = field(default_factory=list)
    down: bool = False
    list_calls: int = 0

    def set(self, key: TaskKey, state: str, **extra: Any) -> None:
        self.states[key] = {"key": key.to_wire(), "state": state, **extra}

    def tasks(self, **filters: Any) -> list[dict[str, Any]]:
        if self.down:
            raise ApiUnavailable("down")
        self.list_calls += 1
        return [
            s
            for k, s in self.states.items()
            if k.dag_id == filters["dag_id"] and k.run_id == filters["run_id"]
        ]

    def task(self, key: TaskKey) -> dict[str, Any] | None:
        return self.states.get(key)

    def cancel(self, key: TaskKey, reason: str = "", requested_by: str = "") -> CancelAnswer:
        self.cancelled.append(key)
        return CancelAnswer(True, "c-1")

    def logs(self, key: TaskKey, tail: int | None = None) -> str:
        if key not in self.states:
            raise UnknownTask(404, "no log")
        return f"output of {key}\n"


@dataclass
class ScriptedPublisher:
    sent: list[tuple[Hashable, bytes, bytes]] = field(default_factory=list)
    failing: set[Hashable] = field(default_factory=set)
    _done: list[tuple[Hashable, str | None]] = field(default_factory=list)

    def publish(self, token: Hashable, key: bytes, value: bytes) -> None:
        self.sent.append((token, key, value))
        self._done.append((token, "broker gone" if token in self.failing else None))

    def outcomes(self) -> list[tuple[Hashable, str | None]]:
        done, self._done = self._done, []
        return done


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api() -> ScriptedApi:
    return ScriptedApi()


@pytest.fixture
def executor(api: ScriptedApi, monkeypatch: pytest.MonkeyPatch) -> PipelineExecutor:
    monkeypatch.setenv("PIPELINE_AIRFLOW_LOST_TIMEOUT_S", "60")
    ex = PipelineExecutor(parallelism=8)
    ex.clock = Clock()
    ex._client = api  # type: ignore[assignment]
    ex._publisher = ScriptedPublisher()  # type: ignore[assignment]
    return ex


def hand_over(ex: PipelineExecutor, *loads: Any) -> None:
    for w in loads:
        ex.queued_tasks[w.ti.key] = w
    ex.trigger_tasks(open_slots=len(loads))


def test_workloads_are_published_and_leave_the_queue(executor: PipelineExecutor) -> None:
    w = workload()
    hand_over(executor, w)
    assert not executor.queued_tasks
    assert executor.running == {w.ti.key}
    [(token, key, _)] = executor._publisher.sent  # type: ignore[union-attr]
    assert token == w.ti.key
    assert key == task_key(w.ti).partition_key


def test_a_publish_that_failed_for_good_fails_the_task(executor: PipelineExecutor) -> None:
    w = workload()
    executor._publisher.failing.add(w.ti.key)  # type: ignore[union-attr]
    hand_over(executor, w)
    executor.sync()
    assert executor.event_buffer[w.ti.key] == (TaskInstanceState.FAILED, "broker gone")
    assert not executor.running and not executor._tracked


def test_states_flow_back_once_each_and_finished_tries_are_forgotten(
    executor: PipelineExecutor, api: ScriptedApi
) -> None:
    ok, bad = workload(task_id="ok"), workload(task_id="bad")
    hand_over(executor, ok, bad)
    api.set(task_key(ok.ti), "queued")
    api.set(task_key(bad.ti), "running", pod_name="bad-1-abc")
    executor.sync()
    assert executor.get_event_buffer() == {bad.ti.key: (TaskInstanceState.RUNNING, "bad-1-abc")}
    executor.sync()
    assert executor.get_event_buffer() == {}  # running is reported once
    api.set(task_key(ok.ti), "success")
    api.set(task_key(bad.ti), "failed", reason="exit code 1", pod_name="bad-1-abc")
    executor.sync()
    events = executor.get_event_buffer()
    assert events[ok.ti.key] == (TaskInstanceState.SUCCESS, None)
    assert events[bad.ti.key] == (
        TaskInstanceState.FAILED,
        "pipeline: failed; exit code 1; bad-1-abc",
    )
    assert not executor.running and not executor._tracked
    assert api.list_calls == 3  # one query per (dag, run) per sync, not one per task


def test_cancelled_and_dead_lettered_tries_fail_in_airflow(
    executor: PipelineExecutor, api: ScriptedApi
) -> None:
    a, b = workload(task_id="a"), workload(task_id="b")
    hand_over(executor, a, b)
    api.set(task_key(a.ti), "cancelled", reason="cancelled by alice")
    api.set(task_key(b.ti), "dead_lettered", reason="schema")
    executor.sync()
    events = executor.get_event_buffer()
    assert {k: s for k, (s, _) in events.items()} == {
        a.ti.key: TaskInstanceState.FAILED,
        b.ti.key: TaskInstanceState.FAILED,
    }


def test_a_try_the_pipeline_never_heard_of_is_reported_lost(executor: PipelineExecutor) -> None:
    w = workload()
    hand_over(executor, w)
    executor.sync()  # published now; the reducer has no record
    executor.clock.now += 59  # type: ignore[attr-defined]
    executor.sync()
    assert executor.event_buffer == {}
    executor.clock.now += 2  # type: ignore[attr-defined]
    executor.sync()
    state, info = executor.event_buffer[w.ti.key]
    assert state == TaskInstanceState.FAILED
    assert info.startswith("lost:")


def test_an_unreachable_api_changes_nothing(executor: PipelineExecutor, api: ScriptedApi) -> None:
    w = workload()
    hand_over(executor, w)
    api.down = True
    executor.sync()
    executor.sync()
    assert executor.event_buffer == {}
    assert executor.running == {w.ti.key}


class _TI:
    """What the scheduler hands try_adopt_task_instances: an ORM row, by its attributes."""

    def __init__(self, w: Any) -> None:
        self.dag_id, self.task_id, self.run_id = w.ti.dag_id, w.ti.task_id, w.ti.run_id
        self.map_index, self.try_number = w.ti.map_index, w.ti.try_number
        self.key = w.ti.key


def test_adoption_keeps_what_the_pipeline_knows_and_returns_the_rest(
    executor: PipelineExecutor, api: ScriptedApi
) -> None:
    known, unknown = _TI(workload(task_id="known")), _TI(workload(task_id="unknown"))
    api.set(task_key(known), "running")
    returned = executor.try_adopt_task_instances([known, unknown])  # type: ignore[list-item]
    assert returned == [unknown]
    assert executor.running == {known.key}
    api.set(task_key(known), "success")
    executor.sync()
    assert executor.get_event_buffer() == {known.key: (TaskInstanceState.SUCCESS, None)}


def test_adoption_of_its_own_tries_keeps_them_as_they_are(
    executor: PipelineExecutor, api: ScriptedApi
) -> None:
    w = workload()
    hand_over(executor, w)
    api.set(task_key(w.ti), "running")
    executor.sync()
    assert executor.get_event_buffer() == {w.ti.key: (TaskInstanceState.RUNNING, None)}
    api.down = True  # the reducer need not answer for what this executor handed over
    assert executor.try_adopt_task_instances([_TI(w)]) == []  # type: ignore[list-item]
    api.down = False
    executor.sync()
    assert executor.get_event_buffer() == {}  # running is not reported a second time


def test_adoption_without_the_api_adopts_nothing(
    executor: PipelineExecutor, api: ScriptedApi
) -> None:
    ti = _TI(workload())
    api.down = True
    assert executor.try_adopt_task_instances([ti]) == [ti]  # type: ignore[list-item]


def test_revoke_cancels_in_the_pipeline_and_forgets(
    executor: PipelineExecutor, api: ScriptedApi
) -> None:
    w = workload()
    hand_over(executor, w)
    executor.revoke_task(ti=_TI(w))  # type: ignore[arg-type]
    assert api.cancelled == [task_key(w.ti)]
    assert not executor.running and not executor._tracked
    assert executor.event_buffer == {}  # revoke_task must not report a state


def test_task_log_comes_from_the_pipeline(executor: PipelineExecutor, api: ScriptedApi) -> None:
    ti = _TI(workload())
    api.set(task_key(ti), "running")
    sources, logs = executor.get_task_log(ti, 1)  # type: ignore[arg-type]
    assert logs == [f"output of {task_key(ti)}\n"]
    assert sources and "pipeline" in sources[0]
    assert executor.get_task_log(ti, 2) == ([f"the pipeline has no log of {_try(ti, 2)}"], [])  # type: ignore[arg-type]


def _try(ti: _TI, n: int) -> TaskKey:
    return TaskKey(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, n)


def test_flags_airflow_reads_are_truthful() -> None:
    assert PipelineExecutor.is_local is False
    assert PipelineExecutor.serve_logs is False
    assert PipelineExecutor.supports_callbacks is False
    assert PipelineExecutor.supports_ad_hoc_ti_run is True
