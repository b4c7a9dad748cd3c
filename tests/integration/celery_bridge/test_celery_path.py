"""The Celery path end to end: real Kafka broker, real `pipeline celery-worker` processes,
and a real Celery broker and result backend (Redis, or for the tests parametrized over
`CONFIGURATIONS` also the filesystem transport with SQLite).

Requests go to the celery topic; the dispatcher and monitor run in this process; commands
run in worker subprocesses and leave side-effect files that prove whether (and how often)
they ran.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu.transport.redis import Channel as RedisChannel
from prometheus_client import REGISTRY

from pipeline.celery_bridge.app import make_app, task_id_for, transport_options
from pipeline.celery_bridge.dispatcher import CeleryDispatcher, payload_of
from pipeline.celery_bridge.ledger import DispatchRecord
from pipeline.celery_bridge.monitor import CeleryMonitor
from pipeline.celery_bridge.publish import send
from pipeline.celery_bridge.worker import LOST_REASON
from pipeline.config import Settings
from pipeline.messages import TaskEvent, TaskKey, TaskRequest, make_request
from pipeline.sandbox.broker import free_port
from pipeline.tasklogs import decode_task_log
from tests.fixtures.celery import (
    CONFIGURATIONS,
    CeleryEnv,
    EventLog,
    StartWorker,
    publish_requests,
    stage_running,
)
from tests.fixtures.kafka import read_all
from tests.fixtures.polling import eventually
from tests.fixtures.redis import HOST as REDIS_HOST
from tests.fixtures.redis import start_redis, stop

pytestmark = pytest.mark.integration


def python(code: str) -> list[str]:
    return ["python", "-c", code]


def counting(path: Path, then: str = "pass") -> list[str]:
    """A command that appends one line to `path` per run, then does `then`."""
    return python(f"open({str(path)!r}, 'a').write('run\\n'); {then}")


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def request(name: str, command: list[str], queue: str) -> TaskRequest:
    """Task keys are unique per test (the run id is its queue): the Redis db lives all session."""
    return make_request(TaskKey("celery-it", name, queue), command, queue)


def key_of(request: TaskRequest) -> TaskKey:
    return TaskKey.from_wire(request["key"])


def finished(log: EventLog, *requests: TaskRequest) -> bool:
    return all(log.terminal(key_of(r)) is not None for r in requests)


@asynccontextmanager
async def celery_path(settings: Settings) -> AsyncIterator[EventLog]:
    """The events topic being read while a dispatcher and a monitor run."""
    async with (
        EventLog(settings) as log,
        stage_running(CeleryDispatcher(settings)),
        stage_running(CeleryMonitor(settings)),
    ):
        yield log


both_configurations = pytest.mark.parametrize("celery_settings", CONFIGURATIONS, indirect=True)


@both_configurations
async def test_each_outcome_reaches_its_terminal_event(
    topics: Settings, celery_settings: CeleryEnv, celery_worker: StartWorker, tmp_path: Path
) -> None:
    settings = celery_settings.configure(PIPELINE_CELERY_EXECUTION_TIMEOUT_S="2")
    queue = celery_settings.queue
    marker = tmp_path / "should-not-exist"
    ok = request("ok", python("print('hello')"), queue)
    exit3 = request("exit3", python("print('bye'); import sys; sys.exit(3)"), queue)
    slow = request("slow", python("import time; time.sleep(30)"), queue)
    refused = request("refused", ["touch", str(marker)], queue)
    await asyncio.to_thread(celery_worker, concurrency=4)
    printed: dict[str, str] = {}

    async def outputs_kept() -> bool:
        for record in await read_all(settings, settings.topic.logs):
            kept = decode_task_log(record.value)
            printed[kept["key"]["task_id"]] = kept["text"]
        return {"ok", "exit3"} <= printed.keys()

    async with celery_path(settings) as log:
        await publish_requests(settings, [ok, exit3, slow, refused])
        await log.until(lambda _: finished(log, ok, exit3, slow, refused))
        await eventually(outputs_kept, timeout_s=30, interval_s=0.2)

    assert (printed["ok"], printed["exit3"]) == ("hello\n", "bye\n")

    success = log.terminal(key_of(ok))
    assert success is not None
    assert (success["state"], success["exit_code"]) == ("success", 0)
    assert success["source"] == "celery-monitor"
    assert success["celery_task_id"] == task_id_for(key_of(ok))
    failed = log.terminal(key_of(exit3))
    assert failed is not None
    assert (failed["state"], failed["exit_code"], failed["reason"]) == ("failed", 3, "exit code 3")
    timed_out = log.terminal(key_of(slow))
    assert timed_out is not None
    assert timed_out["state"] == "failed"
    assert "timeout" in (timed_out["reason"] or "")
    not_allowed = log.terminal(key_of(refused))
    assert not_allowed is not None
    assert not_allowed["state"] == "failed"
    assert "not allowed" in (not_allowed["reason"] or "")
    assert not log.of(key_of(refused), "running"), "a refused command never ran"
    assert not marker.exists()
    for r in (ok, exit3, slow, refused):
        [launched] = log.of(key_of(r), "launched")
        assert launched["source"] == "celery-dispatcher"
        assert launched["celery_task_id"] == task_id_for(key_of(r))


@both_configurations
async def test_duplicate_delivery_of_a_request_runs_it_once(
    topics: Settings, celery_settings: CeleryEnv, celery_worker: StartWorker, tmp_path: Path
) -> None:
    settings = celery_settings.settings
    counter = tmp_path / "runs"
    once = request("once", counting(counter), celery_settings.queue)
    duplicates = _sample("pipeline_celery_dispatcher_requests_total", outcome="duplicate")
    await asyncio.to_thread(celery_worker)
    async with celery_path(settings) as log:
        await publish_requests(settings, [once])
        await log.until(lambda _: finished(log, once))
        await publish_requests(settings, [once])  # re-delivered after it finished
        await log.until(lambda _: len(log.of(key_of(once), "launched")) == 2)

    launched = log.of(key_of(once), "launched")
    assert launched[0]["event_id"] == launched[1]["event_id"], "the same fact, announced twice"
    assert _sample("pipeline_celery_dispatcher_requests_total", outcome="duplicate") == (
        duplicates + 1
    ), "recognised by its dispatch record, not sent again"
    assert celery_settings.queue_length() == 0, "nothing left to run"
    assert runs(counter) == 1


async def test_a_task_delivered_twice_to_workers_runs_once(
    celery_settings: CeleryEnv, celery_worker: StartWorker, tmp_path: Path
) -> None:
    """Below the dispatcher: the same Celery message twice (a re-send, a lost ack)."""
    settings = celery_settings.settings
    counter = tmp_path / "runs"
    twice = request("twice", counting(counter), celery_settings.queue)
    task_id = task_id_for(key_of(twice))
    record: DispatchRecord = {
        "status": "sent", "queue": celery_settings.queue, "payload": payload_of(twice),
        "reason": None, "resends": 0, "resent_at": None,
    }  # fmt: skip
    await asyncio.to_thread(celery_worker, concurrency=1)
    app = make_app(settings.celery)
    try:
        first = await asyncio.to_thread(_send_and_wait, app, task_id, record)
        second = await asyncio.to_thread(_send_and_wait, app, task_id, record)
    finally:
        app.close()
    assert first == second == {"ok": True, "exit_code": 0, "reason": None}
    assert runs(counter) == 1


def _send_and_wait(app: Celery, task_id: str, record: DispatchRecord) -> Any:
    """Send, then wait until a worker took the message and stored a final result."""
    app.backend.forget(task_id)
    send(app, task_id, record)
    return app.AsyncResult(task_id).get(timeout=30)


async def through_a_worker_kill(
    settings: Settings,
    celery_settings: CeleryEnv,
    celery_worker: StartWorker,
    counter: Path,
    when_killed: Callable[[], None] = lambda: None,
) -> TaskEvent:
    """One slow command whose worker is SIGKILLed while it runs (`when_killed` then adds
    what the death left behind), then a second worker: the try's terminal event (`counter`
    counts the command's runs)."""
    command = counting(counter, "import time; time.sleep(1.5)")
    victim = request("victim", command, celery_settings.queue)
    first = await asyncio.to_thread(celery_worker)
    async with celery_path(settings) as log:
        await publish_requests(settings, [victim])
        await log.until(lambda _: runs(counter) >= 1)  # the command is running on `first`
        first.kill(signal.SIGKILL)
        await asyncio.to_thread(first.process.wait)
        when_killed()
        await asyncio.to_thread(celery_worker)
        await log.until(lambda _: finished(log, victim), timeout_s=90)
    terminal = log.terminal(key_of(victim))
    assert terminal is not None
    return terminal


@both_configurations
async def test_a_worker_killed_mid_task_leads_to_a_rerun_where_the_operator_asked(
    topics: Settings, celery_settings: CeleryEnv, celery_worker: StartWorker, tmp_path: Path
) -> None:
    """With `celery.rerun_lost_commands`: Redis hands the message out again after the
    visibility timeout; the filesystem transport cannot (the message died with the worker),
    so the monitor re-sends a task still running after that long."""
    settings = celery_settings.configure(
        PIPELINE_CELERY_EXECUTION_TIMEOUT_S="3",
        PIPELINE_CELERY_VISIBILITY_TIMEOUT_S="4",
        PIPELINE_CELERY_RERUN_LOST_COMMANDS="true",
    )
    counter = tmp_path / "runs"
    terminal = await through_a_worker_kill(settings, celery_settings, celery_worker, counter)
    assert terminal["state"] == "success"
    assert runs(counter) == 2, "re-run by the second worker after the first one died"


@both_configurations
async def test_a_worker_killed_mid_task_fails_its_try_by_default(
    topics: Settings, celery_settings: CeleryEnv, celery_worker: StartWorker, tmp_path: Path
) -> None:
    """Once per try: the command that was running when its worker died is not run again;
    the try fails with the reason that says why."""
    settings = celery_settings.configure(
        PIPELINE_CELERY_EXECUTION_TIMEOUT_S="3", PIPELINE_CELERY_VISIBILITY_TIMEOUT_S="4"
    )
    counter = tmp_path / "runs"
    terminal = await through_a_worker_kill(settings, celery_settings, celery_worker, counter)
    assert terminal["state"] == "failed"
    assert LOST_REASON in (terminal.get("reason") or "")
    assert runs(counter) == 1, "the lost command never ran a second time"


async def test_a_sweep_lock_left_by_a_dead_worker_holds_redelivery_up_briefly(
    topics: Settings, celery_settings: CeleryEnv, celery_worker: StartWorker, tmp_path: Path
) -> None:
    """Workers sweep for lost messages under one lock on the broker; a worker killed inside a
    sweep leaves it held. Redelivery must resume after the lock's expiry (kombu's default
    would hold every redelivery on the broker up for five minutes)."""
    settings = celery_settings.configure(
        PIPELINE_CELERY_EXECUTION_TIMEOUT_S="3",
        PIPELINE_CELERY_VISIBILITY_TIMEOUT_S="4",
        PIPELINE_CELERY_RERUN_LOST_COMMANDS="true",
    )
    options = transport_options(settings.celery)
    expire = options.get("unacked_mutex_expire", RedisChannel.unacked_mutex_expire)

    def died_inside_a_sweep() -> None:
        with redis.Redis.from_url(settings.celery.broker_url.get_secret_value()) as client:
            held = client.lock(RedisChannel.unacked_mutex_key, timeout=expire)
            assert held.acquire(blocking=False), "taken as the victim's sweep would take it"

    counter = tmp_path / "runs"
    terminal = await through_a_worker_kill(
        settings, celery_settings, celery_worker, counter, died_inside_a_sweep
    )
    assert terminal["state"] == "success"
    assert runs(counter) == 2, "re-run once the dead sweeper's lock expired"


async def test_dispatcher_retries_until_the_broker_answers(
    topics: Settings, celery_settings: CeleryEnv, tmp_path: Path
) -> None:
    port = free_port()
    settings = celery_settings.configure(
        PIPELINE_CELERY_BROKER_URL=f"redis://{REDIS_HOST}:{port}/0",
        PIPELINE_CELERY_TASK_PUBLISH_MAX_RETRIES="12",
        PIPELINE_CELERY_PUBLISH_RETRY_BACKOFF_S="0.2",
    )
    late = request("late", python("pass"), celery_settings.queue)
    retried = _retries()
    server: subprocess.Popen[bytes] | None = None
    try:
        async with EventLog(settings) as log, stage_running(CeleryDispatcher(settings)):
            await publish_requests(settings, [late])
            async with asyncio.timeout(30):
                while _retries() < retried + 2:  # noqa: ASYNC110 - a counter, not an event
                    await asyncio.sleep(0.05)
            assert not log.of(key_of(late))
            server = start_redis(port, tmp_path / "late-redis")
            await log.until(lambda _: bool(log.of(key_of(late))))
        [event] = log.of(key_of(late))
        assert event["state"] == "launched"
        assert celery_settings.queue_length() == 1, "sent to the late broker"
    finally:
        if server is not None:
            stop(server)


def _retries() -> float:
    return _sample("pipeline_celery_publish_retries_total")


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_stalled_task_is_resent_once_then_failed(
    topics: Settings, celery_settings: CeleryEnv
) -> None:
    settings = celery_settings.configure(PIPELINE_CELERY_STALLED_TASK_TIMEOUT_S="1")
    stuck = request("stuck", python("pass"), celery_settings.queue)  # no worker serves it
    async with celery_path(settings) as log:
        await publish_requests(settings, [stuck])
        await log.until(lambda _: finished(log, stuck))

    terminal = log.terminal(key_of(stuck))
    assert terminal is not None
    assert terminal["state"] == "failed"
    assert "stalled" in (terminal["reason"] or "")
    assert f"on Celery queue {celery_settings.queue!r}" in (terminal["reason"] or "")
    assert celery_settings.queue_length() == 2, "the original and one re-send"


async def test_a_restarted_monitor_rebuilds_what_is_in_flight(
    topics: Settings, celery_settings: CeleryEnv, celery_worker: StartWorker, tmp_path: Path
) -> None:
    settings = celery_settings.settings
    counter, release = tmp_path / "runs", tmp_path / "release"
    wait_for_release = (
        f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)"
    )
    slow = request("slow", counting(counter, wait_for_release), celery_settings.queue)
    await asyncio.to_thread(celery_worker)
    app = make_app(settings.celery)
    try:
        async with EventLog(settings) as log, stage_running(CeleryDispatcher(settings)):
            async with stage_running(CeleryMonitor(settings)):
                await publish_requests(settings, [slow])
                await log.until(lambda _: bool(log.of(key_of(slow), "running")))
            release.touch()  # the command finishes while no monitor runs
            result = app.AsyncResult(task_id_for(key_of(slow)))
            await asyncio.to_thread(result.get, timeout=30)
            assert log.terminal(key_of(slow)) is None
            async with stage_running(CeleryMonitor(settings)):
                await log.until(lambda _: finished(log, slow))
    finally:
        app.close()
    terminal = log.terminal(key_of(slow))
    assert terminal is not None
    assert terminal["state"] == "success"
    assert runs(counter) == 1
