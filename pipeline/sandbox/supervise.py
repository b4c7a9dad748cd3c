"""`pipeline dev` keeps its children alive: a child that exits is reported, started again
after a backoff, and reported once it answers ready, so the screen never says ready while a
stage is dead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from pipeline.sandbox.dev import DevEnvironment, DevError

FIRST_DELAY_S: Final = 1.0
LONGEST_DELAY_S: Final = 30.0
STEADY_S: Final = 60.0
"""A child that ran this long before it exited starts its backoff over."""


async def supervise(
    env: DevEnvironment, report: Callable[[str], None], interval_s: float = 0.5
) -> None:
    """Run until cancelled: restart every child that exits, saying what happened."""
    loop = asyncio.get_running_loop()
    delays: dict[str, float] = {}
    started_at: dict[str, float] = {}
    while True:
        for child in env.processes.exited():
            name = child.name
            code = child.process.returncode if child.process is not None else None
            if loop.time() - started_at.get(name, -STEADY_S) >= STEADY_S:
                delays[name] = FIRST_DELAY_S
            delay = delays[name]
            report(f"{name} exited with code {code}; restarting it in {delay:.0f}s")
            await asyncio.sleep(delay)
            await child.start()
            started_at[name] = loop.time()
            delays[name] = min(delay * 2, LONGEST_DELAY_S)
            if name in env.http_ports:
                try:
                    await env.wait_ready(only=name)
                except DevError as exc:
                    report(f"{name} did not come back: {exc}")
                    continue
            report(f"{name} restarted and ready")
        await asyncio.sleep(interval_s)
