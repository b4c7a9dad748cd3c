"""The list-then-watch loop: resumes from the right version after every kind of interruption.

The source here is a script of what the API answers (pure control flow); the same loop
against the real emulator is covered by the integration tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from pipeline.watcher.watch_loop import (
    Backoff,
    Listing,
    Pod,
    WatchGone,
    WatchUnavailable,
    list_then_watch,
)

Step = list[dict[str, Any]] | Exception


def frame(kind: str, rv: str, **obj: Any) -> dict[str, Any]:
    return {"type": kind, "object": {"metadata": {"resourceVersion": rv}, **obj}}


class ScriptedSource:
    """Answers lists and watches from scripts; records the versions it was asked for."""

    namespace = "default"

    def __init__(self, lists: list[Listing], watches: list[Step], stopping: asyncio.Event):
        self.lists = lists
        self.watches = watches
        self.stopping = stopping
        self.calls: list[str] = []
        self.watched = asyncio.Event()

    async def list(self) -> Listing:
        self.calls.append("list")
        return self.lists.pop(0)

    async def watch(
        self, resource_version: str, stopping: asyncio.Event
    ) -> AsyncIterator[list[Pod]]:
        self.calls.append(f"watch@{resource_version}")
        self.watched.set()
        if not self.watches:
            self.stopping.set()
            return
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        for item in step:
            yield [item]


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def listed(self, pods: list[Pod], resource_version: str) -> None:
        self.seen.append(f"listed@{resource_version}:{len(pods)}")

    async def changed(self, changes: Sequence[tuple[str, Pod]]) -> None:
        for kind, pod in changes:
            self.seen.append(f"{kind}@{pod['metadata']['resourceVersion']}")

    async def progressed(self, resource_version: str) -> None:
        self.seen.append(f"progress@{resource_version}")


async def run(source: ScriptedSource, **kwargs: Any) -> Recorder:
    recorder = Recorder()
    backoff = Backoff(initial_s=0.001, maximum_s=0.002)
    async with asyncio.timeout(5):
        await list_then_watch(source, recorder, source.stopping, backoff=backoff, **kwargs)
    return recorder


async def test_lists_then_watches_from_the_list_version() -> None:
    stopping = asyncio.Event()
    source = ScriptedSource(
        [Listing([{"metadata": {}}], "5")],
        [[frame("ADDED", "6"), frame("MODIFIED", "7")]],
        stopping,
    )
    recorder = await run(source)
    assert source.calls == ["list", "watch@5", "watch@7"]
    assert recorder.seen == ["listed@5:1", "ADDED@6", "progress@6", "MODIFIED@7", "progress@7"]


async def test_a_checkpoint_skips_the_first_list() -> None:
    stopping = asyncio.Event()
    source = ScriptedSource([], [[frame("DELETED", "12")]], stopping)
    await run(source, resource_version="11")
    assert source.calls == ["watch@11", "watch@12"]


@pytest.mark.parametrize(
    "gone",
    [[frame("ERROR", "", code=410, message="too old resource version")], WatchGone("expired")],
)
async def test_gone_lists_again_and_watches_from_the_new_list(gone: Step) -> None:
    stopping = asyncio.Event()
    source = ScriptedSource([Listing([], "40")], [gone, [frame("MODIFIED", "41")]], stopping)
    recorder = await run(source, resource_version="3")
    assert source.calls == ["watch@3", "list", "watch@40", "watch@41"]
    assert recorder.seen == ["listed@40:0", "MODIFIED@41", "progress@41"]


async def test_bookmarks_move_the_resume_point_without_a_change() -> None:
    stopping = asyncio.Event()
    source = ScriptedSource([Listing([], "1")], [[frame("BOOKMARK", "30")]], stopping)
    recorder = await run(source)
    assert source.calls == ["list", "watch@1", "watch@30"]
    assert recorder.seen == ["listed@1:0", "progress@30"]


async def test_errors_back_off_and_resume_from_the_last_version() -> None:
    stopping = asyncio.Event()
    source = ScriptedSource(
        [Listing([], "1")],
        [
            [frame("ADDED", "2")],
            WatchUnavailable("connection refused"),
            [frame("ERROR", "", code=500, message="internal")],
            [],  # dropped before any frame
            [frame("MODIFIED", "3")],
        ],
        stopping,
    )
    recorder = await run(source)
    assert source.calls == ["list", "watch@1", "watch@2", "watch@2", "watch@2", "watch@2",
                            "watch@3"]  # fmt: skip
    assert recorder.seen[-2:] == ["MODIFIED@3", "progress@3"]


async def test_stop_during_a_pause_ends_promptly() -> None:
    stopping = asyncio.Event()
    source = ScriptedSource([Listing([], "1")], [WatchUnavailable("down")] * 3, stopping)
    recorder = Recorder()
    loop = asyncio.create_task(
        list_then_watch(source, recorder, stopping, backoff=Backoff(initial_s=60, maximum_s=60))
    )
    await asyncio.wait_for(source.watched.wait(), 2)
    stopping.set()
    async with asyncio.timeout(2):
        await loop


def test_backoff_grows_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(initial_s=1, maximum_s=4)
    delays = [backoff.next_delay() for _ in range(5)]
    assert all(0.5 <= d <= 4 for d in delays)
    assert delays[-1] >= 2
    backoff.reset()
    assert backoff.next_delay() <= 1
