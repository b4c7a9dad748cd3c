"""Stopping background tasks: a cancellation that a library swallows is not the end of a stop."""

from __future__ import annotations

import asyncio
import contextlib

from pipeline.runtime import cancel_and_wait


async def test_a_task_that_swallows_its_first_cancellation_still_ends() -> None:
    swallowed = asyncio.Event()

    async def stops_like_an_aiokafka_consumer() -> None:
        inner = asyncio.ensure_future(asyncio.sleep(3600))
        with contextlib.suppress(asyncio.CancelledError):  # as Fetcher.close() does
            await inner
        swallowed.set()
        await asyncio.sleep(3600)  # goes on as if nothing had asked it to stop

    task = asyncio.create_task(stops_like_an_aiokafka_consumer())
    await asyncio.sleep(0)
    await cancel_and_wait([task], patience_s=0.05)
    assert swallowed.is_set() and task.cancelled()


async def test_tasks_that_end_when_cancelled_are_all_cancelled() -> None:
    tasks = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(3)]
    await asyncio.sleep(0)
    await cancel_and_wait(tasks)
    assert all(task.cancelled() for task in tasks)
