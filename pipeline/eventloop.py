"""The event loop every pipeline process runs on: uvloop where it is installed, else asyncio's.

At the sandbox's low and middle rates a stage's CPU is per-request overhead (each record
travels in its own fetch, produce and HTTP call), spread over the loop's own machinery and
aiokafka's protocol code; no one call dominates. uvloop takes the loop's share: in
`pipeline bench e2e --rate 50`, alternating runs, the processes on uvloop used 11% less CPU
per task than on asyncio's loop (8% with the broker's), and p99 submit to launched fell from
141 to 113 ms (medians of four).
uvloop has no Windows build; there the standard loop runs the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without a uvloop build
        return asyncio.new_event_loop
    return uvloop.new_event_loop


new_event_loop: Callable[[], asyncio.AbstractEventLoop] = _loop_factory()
"""A fresh loop of the kind every pipeline process runs on."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on `new_event_loop()`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)
