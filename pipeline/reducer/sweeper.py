"""The stuck-queued sweeper: Airflow's `clear_not_launched_queued_tasks`, over the state table.

A task queued for longer than `reducer.queued_timeout_s` without a launch is re-driven once
(its routed request, kept in its state, is published again to its executor topic) and, if
it is still not launched one timeout later, failed. Both decisions are published as events
(source `sweeper`) and folded like any other, so they are durable, replayable and
idempotent: the event ids are deterministic, a re-drive is a `queued` self-transition that
the fold counts in `redriven`, and a re-published request is a re-delivery the executors
already tolerate (deterministic pod names, Celery task ids).

Each replica sweeps the partitions it owns (no standby replicas, so its table is exactly that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import prometheus_client

from pipeline.messages import State, TaskKey, encode, make_event, parse_time
from pipeline.reducer.fold import SWEEPER, TaskState

if TYPE_CHECKING:
    from pipeline.reducer.app import Reducer

log = logging.getLogger(__name__)

ACTIONS = prometheus_client.Counter(
    "pipeline_reducer_sweeper_actions_total", "Stuck queued tasks handled, by action.", ["action"]
)


@dataclass(frozen=True)
class Action:
    kind: Literal["redrive", "fail"]
    state: TaskState

    @property
    def key(self) -> TaskKey:
        return TaskKey.from_wire(self.state["key"])


def stuck(states: list[TaskState], now: datetime, timeout_s: float) -> list[Action]:
    """What to do with each task queued for longer than `timeout_s` (pure; no I/O)."""
    actions = []
    for state in states:
        if state["state"] != State.QUEUED:
            continue
        if (now - parse_time(state["updated_at"])).total_seconds() < timeout_s:
            continue
        first_time = state.get("redriven", 0) == 0 and "request" in state
        actions.append(Action("redrive" if first_time else "fail", state))
    return actions


def executor_topic(reducer: Reducer, state: TaskState) -> str:
    routing = state.get("request", {}).get("routing") or {}
    if topic := routing.get("topic"):
        return str(topic)
    executor = state.get("executor") or routing.get("target")
    return reducer.topics.kubernetes if executor == "kubernetes" else reducer.topics.celery


async def apply(reducer: Reducer, action: Action) -> None:
    """Publish the action's effects and wait for the broker to acknowledge them."""
    key, timeout_s = action.key, reducer.settings.reducer.queued_timeout_s
    if action.kind == "redrive":
        request = action.state["request"]
        topic = executor_topic(reducer, action.state)
        await reducer.publish(topic, key.partition_key, encode(request))
        event = make_event(
            key,
            SWEEPER,
            State.QUEUED,
            discriminator="redrive",
            reason=f"not launched {timeout_s:g}s after queued; request re-published to {topic}",
        )
    else:
        why = "after a re-drive" if action.state.get("redriven") else "and no request to re-drive"
        event = make_event(
            key,
            SWEEPER,
            State.FAILED,
            discriminator="queued-timeout",
            reason=f"not launched {timeout_s:g}s after queued {why}",
        )
    await reducer.publish(reducer.topics.events, key.partition_key, encode(event))
    ACTIONS.labels(action.kind).inc()
    log.warning("stuck queued task %s", action.kind, extra={"task": str(key)})


async def sweep(reducer: Reducer) -> int:
    """One pass over this replica's states; returns how many tasks were acted on.

    Skipped while the table is recovering: a half-restored table would look stuck.
    """
    if reducer.app.rebalancing or reducer.app.in_recovery:
        return 0
    queued = reducer.states_in(State.QUEUED)
    actions = stuck(queued, datetime.now(UTC), reducer.settings.reducer.queued_timeout_s)
    for action in actions:
        await apply(reducer, action)
    return len(actions)


def register(reducer: Reducer) -> None:
    """Run `sweep` every `reducer.sweep_interval_s` on every replica."""

    async def stuck_queued_sweeper() -> None:
        await sweep(reducer)

    reducer.app.timer(reducer.settings.reducer.sweep_interval_s, on_leader=False)(
        stuck_queued_sweeper
    )
