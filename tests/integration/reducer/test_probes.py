"""The reducer answers the same probes as every stage, on the runtime port."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from pipeline.config import Settings
from tests.fixtures.polling import eventually
from tests.fixtures.reducer import ReducerProcess

pytestmark = pytest.mark.integration


async def status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return 0


async def test_probes_on_the_runtime_port(
    topics: Settings, reducer_process: Callable[[], ReducerProcess]
) -> None:
    reducer = reducer_process()
    probes = f"http://127.0.0.1:{reducer.probe_port}"

    async def ready() -> bool:
        return await status(f"{probes}/readyz") == 200

    await eventually(ready, timeout_s=90, interval_s=0.3)
    assert await status(f"{probes}/healthz") == 200
    assert await status(f"{reducer.url}/readyz") == 200
    async with aiohttp.ClientSession() as session, session.get(f"{probes}/metrics") as response:
        assert "pipeline_reducer_events_total" in await response.text()
