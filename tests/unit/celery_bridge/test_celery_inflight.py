"""The monitor's in-flight set and its low-water commit."""

from __future__ import annotations

from aiokafka import TopicPartition

from pipeline.celery_bridge.inflight import InFlightSet, mentions_celery_task
from pipeline.celery_bridge.monitor import transition_events
from pipeline.celery_bridge.states import Observation
from pipeline.messages import State, TaskEvent, TaskKey, encode, make_event

TP0, TP1 = TopicPartition("events", 0), TopicPartition("events", 1)


def launched(name: str) -> TaskEvent:
    return make_event(
        TaskKey("d", name, "r"), "celery-dispatcher", State.LAUNCHED, celery_task_id=name
    )


def monitor(name: str, state: State) -> TaskEvent:
    return make_event(TaskKey("d", name, "r"), "celery-monitor", state, celery_task_id=name)


def new_set() -> InFlightSet:
    return InFlightSet("celery-dispatcher", "celery-monitor")


def test_commit_stops_at_the_oldest_task_still_in_flight() -> None:
    inflight = new_set()
    inflight.learn(TP0, 0, launched("a"))
    inflight.learn(TP0, 1, launched("b"))
    inflight.learn(TP0, 2, monitor("x", State.SUCCESS))
    inflight.learn(TP1, 5, launched("c"))
    assert inflight.commit_offsets() == {TP0: 0, TP1: 5}
    inflight.learn(TP0, 3, monitor("a", State.SUCCESS))
    assert inflight.commit_offsets() == {TP0: 1, TP1: 5}
    inflight.apply(monitor("b", State.FAILED))
    inflight.apply(monitor("c", State.SUCCESS))
    assert inflight.commit_offsets() == {TP0: 4, TP1: 6}
    assert len(inflight) == 0


def test_only_the_dispatchers_launch_starts_tracking() -> None:
    inflight = new_set()
    inflight.learn(TP0, 0, make_event(TaskKey("d", "t", "r"), "launcher", State.LAUNCHED))
    inflight.learn(TP0, 1, monitor("z", State.RUNNING))
    assert len(inflight) == 0
    inflight.learn(TP0, 2, launched("a"))
    inflight.learn(TP0, 3, launched("a"))  # re-announced: still one, the earliest offset kept
    assert [e.offset for e in inflight.tasks.values()] == [2]


def test_a_replayed_running_event_is_not_reported_again() -> None:
    inflight = new_set()
    inflight.learn(TP0, 0, launched("a"))
    inflight.learn(TP0, 1, monitor("a", State.RUNNING))
    entry = inflight.tasks["a"]
    events = transition_events(entry, Observation(State.SUCCESS, None, 0))
    assert [e["state"] for e in events] == ["success"]


def test_a_finished_command_reports_running_first_but_a_refused_one_does_not() -> None:
    inflight = new_set()
    inflight.learn(TP0, 0, launched("a"))
    entry = inflight.tasks["a"]
    ran = transition_events(entry, Observation(State.FAILED, "exit code 3", 3))
    assert [(e["state"], e.get("exit_code")) for e in ran] == [("running", None), ("failed", 3)]
    refused = transition_events(entry, Observation(State.FAILED, "command not allowed"))
    assert [e["state"] for e in refused] == ["failed"]


def test_revoked_partitions_are_forgotten() -> None:
    inflight = new_set()
    inflight.learn(TP0, 0, launched("a"))
    inflight.learn(TP1, 0, launched("b"))
    inflight.drop_partitions([TP0])
    assert list(inflight.tasks) == ["b"]
    assert TP0 not in inflight.commit_offsets()


def test_only_events_of_celery_tasks_are_parsed_at_all() -> None:
    assert mentions_celery_task(encode(launched("a")))
    assert mentions_celery_task(encode(monitor("a", State.SUCCESS)))
    kubernetes = make_event(TaskKey("d", "k", "r"), "watcher", State.SUCCESS, executor="kubernetes")
    assert not mentions_celery_task(encode(kubernetes))
    assert not mentions_celery_task(None)
