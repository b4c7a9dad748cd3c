"""The state table's retention: finished tries are forgotten once `reducer.retention_s` old.

Without it the table, its listing index and the state topic grow by a try for every try ever
run, so a reducer's memory grows with its age. A retention bounds them by the tries of one
window, as the launch ledger's horizon bounds the launcher.

- A pass every `reducer.sweep_interval_s` forgets each finished try whose last change is
  older than the horizon: it leaves this replica's table and index, and a tombstone goes to
  its changelog partition, so a recovery does not bring it back. A try that is not finished
  is kept, however old: it still needs someone's attention (the sweeper fails one stuck
  queued; one stuck running shows as such).
- A record from before the horizon about a try the table does not hold is not folded
  (outcome `expired`): folded, it would bring back part of a forgotten try (a re-delivered
  event, a replayed request the sweeper would then re-drive).

The pass walks the index in arrival order and stops at the first finished try first seen
after the horizon: what arrived later was first seen later, give or take the producers'
clock skew, which delays a forget by as much. Its cost is the tries it forgets plus the old
ones it keeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import prometheus_client

from pipeline.messages import epoch_s
from pipeline.reducer.fold import TaskState, is_terminal
from pipeline.reducer.listing import Arrivals

if TYPE_CHECKING:
    from pipeline.reducer.app import Reducer

log = logging.getLogger(__name__)

CHUNK = 1000
"""Tries forgotten between two looks at the index, so a pass never holds the loop long."""

FORGOTTEN = prometheus_client.Counter(
    "pipeline_reducer_forgotten_total", "Finished tries forgotten past the retention horizon."
)


def horizon(now_s: float, retention_s: float) -> float | None:
    """The epoch second before which a finished try is forgotten; None: kept forever."""
    return now_s - retention_s if retention_s > 0 else None


def before_horizon(when: str, horizon_s: float | None) -> bool:
    """Whether the time `when` lies before the horizon (a time that does not parse does not)."""
    if horizon_s is None:
        return False
    at = epoch_s(when)
    return at is not None and at < horizon_s


def forgettable(state: TaskState, horizon_s: float) -> bool:
    """A finished try whose last change is older than the horizon."""
    return is_terminal(state["state"]) and before_horizon(state["updated_at"], horizon_s)


def old_keys(arrivals: Arrivals, horizon_s: float, limit: int) -> list[bytes]:
    """Up to `limit` keys of forgettable tries, oldest arrivals first (see the module)."""
    found: list[bytes] = []
    for key, state in _finished_by_arrival(arrivals):
        if forgettable(state, horizon_s):
            found.append(key)
            if len(found) == limit:
                break
        elif not before_horizon(state.get("first_seen") or state["updated_at"], horizon_s):
            break
    return found


def _finished_by_arrival(arrivals: Arrivals) -> Iterator[tuple[bytes, TaskState]]:
    """Finished tries in arrival order, each read from the table (its cell says finished)."""
    for key, cell in arrivals.cell_of.items():
        if is_terminal(cell.partition(":")[2]) and (state := arrivals.lookup(key)):
            yield key, state


async def forget_old(reducer: Reducer) -> int:
    """One retention pass over this replica's table; returns how many tries it forgot.

    Skipped while the table is recovering or rebalancing: what it holds is not settled.
    """
    horizon_s = horizon(time.time(), reducer.settings.reducer.retention_s)
    forgotten = 0
    while horizon_s is not None and not (reducer.app.rebalancing or reducer.app.in_recovery):
        chunk = old_keys(reducer.newest(), horizon_s, CHUNK)
        dropped = await reducer.forget(chunk, horizon_s)
        forgotten += dropped
        if len(chunk) < CHUNK or not dropped:
            break
    if forgotten:
        FORGOTTEN.inc(forgotten)
        log.info("forgot %d finished tries past the retention horizon", forgotten)
    return forgotten


def register(reducer: Reducer) -> None:
    """Run `forget_old` every `reducer.sweep_interval_s` on every replica."""

    async def retention_pass() -> None:
        try:
            await forget_old(reducer)
        except Exception as exc:  # a tombstone not written: the try comes back at recovery
            log.warning("retention pass stopped: %r", exc)

    reducer.app.timer(reducer.settings.reducer.sweep_interval_s, on_leader=False)(retention_pass)
