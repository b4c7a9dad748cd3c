"""The reducer ends within its shutdown deadline even when faust's own stop cannot finish."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp
import pytest

from pipeline.config import load_settings
from pipeline.kafka import create_topics
from pipeline.sandbox.broker import tansu_broker
from tests.fixtures.polling import eventually
from tests.fixtures.reducer import ReducerProcess

pytestmark = pytest.mark.integration


async def test_a_reducer_whose_broker_is_gone_still_stops_on_sigterm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Faust's stop waits for the broker (commit, leave group) without a bound; a stage must
    exit within `runtime.shutdown_timeout_s` whatever it waits for."""
    monkeypatch.setenv("PIPELINE_RUNTIME_SHUTDOWN_TIMEOUT_S", "5")
    with tansu_broker() as broker:
        monkeypatch.setenv("PIPELINE_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
        settings = load_settings()
        await create_topics(settings.kafka, settings.topic)
        reducer = ReducerProcess(settings, tmp_path / "reducer.log").start()
        try:

            async def ready() -> bool:
                try:
                    return bool(await reducer.get("/readyz"))
                except aiohttp.ClientError:
                    return False

            await eventually(ready, timeout_s=120, interval_s=0.3)
            broker.process.kill()
            broker.process.wait()
            assert reducer.process is not None
            reducer.process.terminate()
            try:
                code = await asyncio.to_thread(reducer.process.wait, 30)
            except subprocess.TimeoutExpired:
                log = reducer.log_path.read_text()[-2000:]
                pytest.fail(f"the reducer ignored its shutdown deadline; log: {log}")
            assert code == 1, "a stop cut short by the deadline is a runtime failure"
            assert "shutdown deadline passed; exiting" in reducer.log_path.read_text()
        finally:
            reducer.kill()
