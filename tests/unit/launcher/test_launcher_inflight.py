"""How the count of unfinished pods treats late and repeated news of a try's end."""

from __future__ import annotations

from pipeline.launcher.inflight import InFlight
from pipeline.messages import TaskKey

KEY = TaskKey("dag", "task", "run", -1, 1)


def test_a_finished_pod_leaves_the_count_once() -> None:
    in_flight = InFlight()
    in_flight.add(KEY)
    assert (len(in_flight), KEY in in_flight) == (1, True)
    assert in_flight.finish(KEY) is True
    assert in_flight.finish(KEY) is False  # a second finished record frees no second slot
    assert (len(in_flight), KEY in in_flight) == (0, False)


def test_an_add_after_the_finish_does_not_revive_the_try() -> None:
    in_flight = InFlight()
    in_flight.finish(KEY)  # the pod ended before its create call returned
    in_flight.add(KEY)
    assert len(in_flight) == 0
    in_flight.add(TaskKey("dag", "task", "run", -1, 2))  # the next try is another pod
    assert len(in_flight) == 1


def test_only_the_newest_finished_tries_are_remembered() -> None:
    in_flight = InFlight(remember=2)
    old, middle, new = (TaskKey("dag", "task", f"run-{i}") for i in range(3))
    for key in (old, middle, old, new):  # old's second record makes it newer
        in_flight.finish(key)
    for key in (old, middle, new):
        in_flight.add(key)
    assert (old in in_flight, middle in in_flight, new in in_flight) == (False, True, False)
