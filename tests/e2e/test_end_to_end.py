"""Every stage together, as `pipeline dev` runs them: each task ends exactly as it should.

Both executors, successes and failures, a disallowed command, a pod stuck Pending, invalid
messages and duplicate submissions; then the same again with every stage restarted mid-run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis

from pipeline.kafka import count_records, make_producer, send_all, started
from pipeline.messages import TERMINAL_STATES, TaskKey
from pipeline.sandbox.dev import STAGES, DevEnvironment, DevOptions, dev_environment
from pipeline.sandbox.kube import FaultConfig, Timings
from pipeline.sandbox.workload import STUCK_IMAGE, Workload, mixed_workload
from tests.fixtures.polling import eventually
from tests.fixtures.redis import RedisServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.asyncio(loop_scope="module"),
]

FAST_SWEEPS = {
    "PIPELINE_WATCHER_PENDING_TIMEOUT_S": "4",
    "PIPELINE_WATCHER_PENDING_CHECK_INTERVAL_S": "1",
}
# the restart test restarts every stage at once on a busy machine: a longer session than the
# sandbox profile's keeps a CPU-starved member from being expelled mid-run
PATIENT_SESSIONS = {"PIPELINE_KAFKA_SESSION_TIMEOUT_MS": "6000"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline_env(redis_server: RedisServer) -> AsyncIterator[DevEnvironment]:
    celery = redis_server.url(redis_server.new_db())
    options = DevOptions(
        kube_mode="process",
        faults=FaultConfig(stuck_pending_images=STUCK_IMAGE),
        timings=Timings(pending_seconds=0.0, run_seconds=0.05, backoff_seconds=0.05),
        extra_env=FAST_SWEEPS
        | PATIENT_SESSIONS
        | {"PIPELINE_CELERY_BROKER_URL": celery, "PIPELINE_CELERY_RESULT_BACKEND": celery},
    )
    async with dev_environment(options) as env:
        await env.wait_ready()
        yield env


async def publish(env: DevEnvironment, records: list[tuple[bytes | None, bytes]]) -> None:
    kafka = env.settings.kafka
    async with started(make_producer(kafka, "e2e"), kafka) as producer:
        await send_all(producer, [(env.settings.topic.requests, k, v) for k, v in records])


async def states_of(env: DevEnvironment, run_id: str) -> dict[TaskKey, dict[str, Any]]:
    url = f"{env.api_url}/tasks?run_id={run_id}&limit=100000"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        response.raise_for_status()
        tasks = (await response.json())["tasks"]
    return {TaskKey.from_wire(t["key"]): t for t in tasks}


async def settle(env: DevEnvironment, work: Workload) -> dict[TaskKey, dict[str, Any]]:
    """Wait until every expected task is terminal; return the run's states."""
    found: dict[TaskKey, dict[str, Any]] = {}

    async def all_terminal() -> bool:
        assert not env.processes.exited(), f"a stage died; logs in {env.work_dir}"
        found.update(await states_of(env, work.run_id))
        return all(k in found and found[k]["state"] in TERMINAL_STATES for k in work.expected)

    try:
        await eventually(all_terminal, timeout_s=240, interval_s=0.5)
    except TimeoutError:
        stuck = {k: found[k]["state"] if k in found else "unseen" for k in work.expected}
        stuck = {k: v for k, v in stuck.items() if v not in TERMINAL_STATES}
        examples = {str(k): (v, found.get(k, {}).get("executor")) for k, v in stuck.items()}
        raise AssertionError(
            f"{len(stuck)} tasks not terminal, by state {Counter(stuck.values())}; e.g. "
            f"{dict(list(examples.items())[:8])}; logs in {env.work_dir}"
        ) from None
    return found


def assert_outcomes(work: Workload, found: dict[TaskKey, dict[str, Any]]) -> None:
    wrong = {
        str(k): (found[k]["state"], found[k].get("reason"), expected.value)
        for k, expected in work.expected.items()
        if found[k]["state"] != expected.value
    }
    assert not wrong, f"tasks that ended wrongly (state, reason, expected): {wrong}"
    assert set(found) == set(work.expected), "the run holds exactly the submitted tasks"
    executors = {
        str(k): found[k].get("executor") for k in work.expected if work.executors[k] != "none"
    }
    assert executors == {str(k): e for k, e in work.executors.items() if e != "none"}


def listeners(port: int) -> set[str]:
    """The local addresses listening on TCP `port`, in /proc/net/tcp's hex."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


async def test_everything_listens_on_loopback_only(pipeline_env: DevEnvironment) -> None:
    ports = {
        "broker": int(pipeline_env.settings.kafka.bootstrap_servers.rsplit(":", 1)[1]),
        "state API": pipeline_env.settings.reducer.api_port,
        "kube emulator": pipeline_env.emulator.port,
    } | {f"{name} health": port for name, port in pipeline_env.http_ports.items()}
    bound = {name: listeners(port) for name, port in ports.items()}
    assert bound == {name: {"0100007F"} for name in ports}, "127.0.0.1, not 0.0.0.0 or [::]"


async def test_every_task_reaches_exactly_its_expected_state(pipeline_env: DevEnvironment) -> None:
    work = mixed_workload(500, run_id="e2e-1", disallowed=1, stuck_pending=1, duplicates=25)
    dlq_before = await count_records(pipeline_env.settings.kafka, pipeline_env.settings.topic.dlq)
    await publish(pipeline_env, work.records)
    assert_outcomes(work, await settle(pipeline_env, work))
    dlq_after = await count_records(pipeline_env.settings.kafka, pipeline_env.settings.topic.dlq)
    assert dlq_after - dlq_before == work.invalid
    results = pipeline_env.settings.celery.result_backend.get_secret_value()
    with redis.Redis.from_url(results) as client:
        assert client.dbsize() > 0, "Celery ran on the test's own Redis"


async def test_the_same_holds_when_every_stage_restarts_mid_run(
    pipeline_env: DevEnvironment,
) -> None:
    work = mixed_workload(500, run_id="e2e-2", disallowed=1, stuck_pending=1, duplicates=25)
    dlq_before = await count_records(pipeline_env.settings.kafka, pipeline_env.settings.topic.dlq)
    half = len(work.records) // 2
    await publish(pipeline_env, work.records[:half])
    for name in (*STAGES, "celery-worker"):
        await pipeline_env.restart_stage(name)
    await publish(pipeline_env, work.records[half:])
    await pipeline_env.wait_ready()
    assert_outcomes(work, await settle(pipeline_env, work))
    dlq_after = await count_records(pipeline_env.settings.kafka, pipeline_env.settings.topic.dlq)
    assert dlq_after - dlq_before == work.invalid
