"""A broker that stops answering while the watcher finishes a try: the finishing is retried,
and the try's log and `finished` launch record still land, without a restart."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client

from pipeline.config import Settings
from pipeline.sandbox.broker import RunningBroker, tansu_broker
from pipeline.sandbox.kube import KubeEmulator
from tests.fixtures.polling import eventually
from tests.integration.watcher.support import (
    WatcherProcess,
    create_pod,
    task,
    terminal,
    wait_for_ends,
)
from tests.integration.watcher.test_watcher_processes import kept_for

pytestmark = pytest.mark.integration


@pytest.fixture
def broker() -> Iterator[RunningBroker]:
    """A broker of this test's own: it is paused, and the session's must not be."""
    with tansu_broker() as running:
        yield running


@contextmanager
def paused(broker: RunningBroker) -> Iterator[None]:
    broker.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        broker.process.send_signal(signal.SIGCONT)


async def test_a_finish_that_meets_a_paused_broker_is_retried_until_it_lands(
    broker: RunningBroker,
    watcher_settings: Settings,
    kube_emulator: KubeEmulator,
    core_v1: client.CoreV1Api,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA_REQUEST_TIMEOUT_MS", "2000")  # fail fast while paused
    watcher = WatcherProcess(tmp_path / "watcher.log")
    warmup, failing = task(0), task(1)
    try:
        await watcher.start()
        await create_pod(core_v1, warmup)
        await wait_for_ends(watcher_settings, [warmup])
        await create_pod(core_v1, failing, run_seconds=1.0, exit_code=3)
        kube_emulator.faults.update(latency_seconds=8.0)  # the log read takes that long
        found = await wait_for_ends(watcher_settings, [failing], timeout_s=60)
        ended = terminal(found, failing)
        assert ended is not None and ended["state"] == "failed"
        assert not await kept_for(watcher_settings, failing), "finished before the pause"

        async def finish_failed() -> bool:
            return "finishing 1 pods failed" in watcher.log.read_text(errors="replace")

        with paused(broker):  # the log read ends meanwhile and its writes time out
            await eventually(finish_failed, timeout_s=60)
        kube_emulator.faults.update(latency_seconds=0.0)
        await eventually(lambda: kept_for(watcher_settings, failing), timeout_s=60)
        assert watcher.process is not None and watcher.process.returncode is None, (
            "finished by the same process, not by a restart"
        )
        assert await watcher.stop() == 0
    finally:
        await watcher.kill()
