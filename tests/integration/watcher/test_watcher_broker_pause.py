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
from pipeline.messages import TaskKey
from pipeline.sandbox.broker import RunningBroker, tansu_broker
from pipeline.sandbox.kube import KubeEmulator
from tests.fixtures.polling import eventually
from tests.integration.watcher.support import (
    WatcherProcess,
    a_failed_end_with_a_slow_log_read,
    kept_for,
)

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
    try:
        ended = await a_failed_end_with_a_slow_log_read(
            watcher, watcher_settings, kube_emulator, core_v1
        )
        failing = TaskKey.from_wire(ended["key"])

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
