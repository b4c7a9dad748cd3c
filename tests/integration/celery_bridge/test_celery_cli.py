"""`pipeline run celery-dispatcher` and `pipeline run celery-monitor` as real processes."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.messages import TaskKey, make_request
from tests.fixtures.celery import CeleryEnv, EventLog, StartWorker, publish_requests

pytestmark = pytest.mark.integration

PIPELINE = str(Path(sys.executable).parent / "pipeline")


async def test_stage_processes_carry_a_task_through_and_stop_cleanly_on_sigterm(
    topics: Settings, celery_settings: CeleryEnv, celery_worker: StartWorker
) -> None:
    settings = celery_settings.settings
    key = TaskKey("celery-cli", "hello", celery_settings.queue)
    await asyncio.to_thread(celery_worker)
    stages = [
        await asyncio.create_subprocess_exec(
            PIPELINE,
            "run",
            name,
            stdout=asyncio.subprocess.DEVNULL,
        )
        for name in ("celery-dispatcher", "celery-monitor")
    ]
    try:
        async with EventLog(settings) as log:
            await publish_requests(
                settings, [make_request(key, ["python", "-c", "pass"], celery_settings.queue)]
            )
            await log.until(lambda _: log.terminal(key) is not None)
        terminal = log.terminal(key)
        assert terminal is not None and terminal["state"] == "success"
        for process in stages:
            process.send_signal(signal.SIGTERM)
        codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in stages)), 30)
        assert codes == [0, 0]
    finally:
        for process in stages:
            if process.returncode is None:
                process.kill()
                await process.wait()
