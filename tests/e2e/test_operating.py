"""Operating tasks in the whole sandbox: cancel wherever a task is, read its logs after it is gone.

Real stages as processes (`pipeline dev`'s environment), the Kubernetes emulator in process
mode (pods are real local processes), a real Celery worker on Redis, the reducer's API.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from pipeline.celery_bridge.app import make_app, make_ledger, task_id_for
from pipeline.client import AsyncPipelineClient
from pipeline.kafka import make_producer, send_all, started
from pipeline.messages import (
    TERMINAL_STATES,
    TaskKey,
    encode,
    make_control,
    make_request,
    parse_time,
)
from pipeline.pods import pod_name
from pipeline.sandbox.dev import DevEnvironment, DevOptions, dev_environment
from pipeline.sandbox.kube import FaultConfig, Timings
from pipeline.sandbox.kube.status import ApiError
from pipeline.sandbox.workload import STUCK_IMAGE
from tests.fixtures.celery import redis_env
from tests.fixtures.polling import eventually
from tests.fixtures.redis import RedisServer
from tests.fixtures.reducer import PIPELINE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.asyncio(loop_scope="module"),
]

ALLOWED = [[sys.executable], ["sleep"]]
PY = sys.executable


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ops(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DevEnvironment]:
    options = DevOptions(
        kube_mode="process",
        faults=FaultConfig(stuck_pending_images=STUCK_IMAGE),
        timings=Timings(pending_seconds=0.0, run_seconds=0.05, backoff_seconds=0.05),
        extra_env={
            **redis_env(redis_server.url(redis_server.new_db())),
            "PIPELINE_SECURITY_ALLOWED_COMMANDS": orjson.dumps(ALLOWED).decode(),
            "PIPELINE_ROUTER_SESSION_TIMEOUT_MS": "6000",
            "PIPELINE_LAUNCHER_SESSION_TIMEOUT_MS": "6000",
            "PIPELINE_CELERY_MONITOR_POLL_INTERVAL_S": "0.3",
            "PIPELINE_LAUNCHER_CANCEL_GRACE_PERIOD_S": "5",
            "PIPELINE_KUBE_NAMESPACE": "airflow",  # not the emulator's own: `dev` makes it
        },
        work_dir=tmp_path_factory.mktemp("ops"),
    )
    async with dev_environment(options) as env:
        await env.wait_ready()
        yield env


def new_key(task: str) -> TaskKey:
    return TaskKey("ops", task, f"run-{uuid.uuid4().hex[:8]}")


async def submit(
    sandbox: DevEnvironment, key: TaskKey, argv: list[str], queue: str, **extra: Any
) -> None:
    request = make_request(key, argv, queue, **extra)
    kafka, topic = sandbox.settings.kafka, sandbox.settings.topic.requests
    async with started(make_producer(kafka, "test"), kafka) as producer:
        await send_all(producer, [(topic, key.partition_key, encode(request))])


async def state_of(env: DevEnvironment, key: TaskKey) -> dict[str, Any] | None:
    async with AsyncPipelineClient(env.api_url) as client:
        return await client.task(key)


async def wait_state(
    env: DevEnvironment, key: TaskKey, wanted: str, timeout_s: float = 60.0
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        state = await state_of(env, key)
        seen["last"] = state
        if state is not None and state["state"] in TERMINAL_STATES and state["state"] != wanted:
            raise AssertionError(f"{key} ended {state['state']}: {state.get('reason')}")
        return state is not None and state["state"] == wanted

    try:
        await eventually(reached, timeout_s=timeout_s, interval_s=0.2)
    except TimeoutError:
        raise AssertionError(f"{key} never reached {wanted}; last: {seen.get('last')}") from None
    return seen["last"]  # type: ignore[no-any-return]


async def cancel(env: DevEnvironment, key: TaskKey, reason: str) -> None:
    async with AsyncPipelineClient(env.api_url) as client:
        answer = await client.cancel(key, reason=reason, requested_by="tester")
    assert answer.accepted, answer


def pod_exists(env: DevEnvironment, key: TaskKey) -> bool:
    try:
        env.emulator.store.get((env.settings.kube.namespace, pod_name(key)))
    except ApiError:
        return False
    return True


def assert_cancelled(state: dict[str, Any], reason: str) -> None:
    assert state["cancel"]["reason"] == reason and state["cancel"]["requested_by"] == "tester"
    assert state["reason"] == f"cancelled by tester: {reason}"


def process_gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def test_a_pending_pod_is_deleted_and_the_try_cancelled(ops: DevEnvironment) -> None:
    key = new_key("pending")
    await submit(ops, key, ["sleep", "60"], "kubernetes", image=STUCK_IMAGE)
    await wait_state(ops, key, "launched")
    assert pod_exists(ops, key)
    await cancel(ops, key, "stuck")
    assert_cancelled(await wait_state(ops, key, "cancelled", timeout_s=20), "stuck")
    await until(lambda: not pod_exists(ops, key), timeout_s=20)


async def test_a_running_pod_is_ended_and_what_it_printed_is_kept(ops: DevEnvironment) -> None:
    key = new_key("sleeper")
    script = "import time; print('started', flush=True); time.sleep(60)"
    await submit(ops, key, [PY, "-c", script], "kubernetes")
    await wait_state(ops, key, "running")
    spec = f"{key.dag_id}/{key.task_id}/{key.run_id}"

    seen: list[str] = []

    async def printed() -> bool:
        async with AsyncPipelineClient(ops.api_url) as client:
            seen.append(await client.logs(key))
        return "started" in seen[-1]

    try:  # live, from the Kubernetes API
        await eventually(printed, timeout_s=90, interval_s=0.3)
    except TimeoutError:
        raise AssertionError(f"the running pod's log never showed 'started': {seen[-3:]}") from None
    await cancel(ops, key, "runaway")
    state = await wait_state(ops, key, "cancelled", timeout_s=20)
    assert_cancelled(state, "runaway")
    await until(lambda: not pod_exists(ops, key), timeout_s=20)
    code, kept, err = await run_cli("logs", spec, env=_cli_env(ops))
    assert (code, _lines(kept)) == (0, ["started"]), err


async def test_a_queued_celery_task_is_never_run_even_by_a_worker_that_starts_later(
    ops: DevEnvironment, tmp_path: Path
) -> None:
    key = new_key("parked")
    marker = tmp_path / "ran"
    await submit(ops, key, [PY, "-c", f"open({str(marker)!r}, 'w')"], "parked")
    await wait_state(ops, key, "launched")  # sent to a queue no worker serves yet
    await cancel(ops, key, "not needed")
    assert_cancelled(await wait_state(ops, key, "cancelled", timeout_s=20), "not needed")

    await ops.processes.start("parked-worker", "celery-worker", "--queue=parked")
    ledger = make_ledger(make_app(ops.settings.celery), ops.settings.celery)
    task_id = task_id_for(key)
    try:
        await until(
            lambda: ledger.completed(task_id) is not None, timeout_s=120
        )  # a worker starting under load
    finally:
        await ops.processes.children["parked-worker"].stop()
    assert ledger.completed(task_id)["cancel"]["requested_by"] == "tester"  # type: ignore[index]
    assert not marker.exists(), "a cancelled task ran"
    assert (await state_of(ops, key) or {})["state"] == "cancelled"


async def test_a_running_celery_task_is_terminated_with_its_children_and_its_output_kept(
    ops: DevEnvironment, tmp_path: Path
) -> None:
    key = new_key("spinner")
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time\n"
        "print('spinning', flush=True)\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n"
    )
    await submit(ops, key, [PY, "-c", script], "default")
    await wait_state(ops, key, "running")
    await until(lambda: pids.exists() and len(pids.read_text().split()) == 2)
    parent, child = map(int, pids.read_text().split())
    assert not process_gone(parent) and not process_gone(child)
    await cancel(ops, key, "too slow")
    assert_cancelled(await wait_state(ops, key, "cancelled", timeout_s=20), "too slow")
    await until(lambda: process_gone(parent) and process_gone(child), timeout_s=20)

    async def kept() -> bool:  # on the logs topic once the worker recorded the command's end
        state = await state_of(ops, key)
        return bool(state and state.get("log"))

    await eventually(kept, timeout_s=30, interval_s=0.2)
    spec = f"{key.dag_id}/{key.task_id}/{key.run_id}"
    code, printed, err = await run_cli("logs", spec, env=_cli_env(ops))
    assert (code, _lines(printed)) == (0, ["spinning"]), err


async def test_a_task_cancelled_before_it_is_routed_is_never_launched(
    ops: DevEnvironment,
) -> None:
    router = ops.processes.children["router"]
    await router.stop()
    key = new_key("early")
    try:
        await submit(ops, key, ["sleep", "60"], "kubernetes")
        code, _, err = await run_cli(
            "cancel", f"{key.dag_id}/{key.task_id}/{key.run_id}", "--try", "1", "--force",
            "--reason", "never mind", env=_cli_env(ops),
        )  # fmt: skip
        assert code == 0, err
    finally:
        await router.start()
    state = await wait_state(ops, key, "cancelled", timeout_s=60)
    assert state["cancel"]["reason"] == "never mind"
    assert "launched" not in [step["state"] for step in state["history"]]
    assert not pod_exists(ops, key)


async def test_a_finished_task_stays_as_it_was(ops: DevEnvironment) -> None:
    key = new_key("done")
    await submit(ops, key, [PY, "-c", "print('ok')"], "default")
    before = await wait_state(ops, key, "success")
    async with AsyncPipelineClient(ops.api_url) as client:
        answer = await client.cancel(key, reason="late", requested_by="tester")
    assert (answer.accepted, answer.state) == (False, "success")
    code, out, _ = await run_cli(
        "cancel", f"{key.dag_id}/{key.task_id}/{key.run_id}", env=_cli_env(ops)
    )
    assert code == 0 and "already finished (success)" in out
    after = await state_of(ops, key)
    assert (
        after is not None and after["state"] == "success" and after["history"] == before["history"]
    )


PRINTER = (
    "import os, sys, time\n"
    "print('out: first', os.environ['DB_PASSWORD'], flush=True)\n"
    "print('err: second', file=sys.stderr, flush=True)\n"
    "time.sleep(3)\n"
    "print('out: third', flush=True)\n"
)


@pytest.mark.parametrize("queue", ["kubernetes", "default"])
async def test_logs_show_while_running_and_after_the_pod_or_worker_is_gone(
    ops: DevEnvironment, queue: str
) -> None:
    key = new_key(f"printer-{queue}")
    await submit(ops, key, [PY, "-c", PRINTER], queue, env={"DB_PASSWORD": "hunter22"})

    async def known() -> bool:
        return await state_of(ops, key) is not None

    await eventually(known, timeout_s=60, interval_s=0.2)  # following starts before it runs
    spec = f"{key.dag_id}/{key.task_id}/{key.run_id}"
    code, followed, err = await run_cli("logs", spec, "--follow", env=_cli_env(ops))
    assert code == 0, err
    assert _lines(followed) == ["out: first ***", "err: second", "out: third"]
    await wait_state(ops, key, "success")
    if queue == "kubernetes":
        await until(lambda: not pod_exists(ops, key), timeout_s=20)
    else:
        await ops.restart_stage("celery-worker")
    code, kept, err = await run_cli("logs", spec, env=_cli_env(ops))
    assert (code, _lines(kept)) == (0, ["out: first ***", "err: second", "out: third"]), err
    code, last, _ = await run_cli("logs", spec, "--tail", "1", env=_cli_env(ops))
    assert _lines(last) == ["out: third"]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


def _cli_env(env: DevEnvironment) -> dict[str, str]:
    return {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": env.settings.kafka.bootstrap_servers,
        "PIPELINE_REDUCER_API_URL": env.api_url,
    }


async def until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async def check() -> bool:
        return predicate()

    await eventually(check, timeout_s=timeout_s, interval_s=0.2)


async def run_cli(*args: str, env: dict[str, str], timeout_s: float = 60.0) -> tuple[int, str, str]:
    """`pipeline ARGS...` against the sandbox."""
    process = await asyncio.create_subprocess_exec(
        PIPELINE, *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


RACERS = 200


async def test_cancels_racing_launches_leave_no_pod_and_none_launched_after_its_cancel(
    ops: DevEnvironment,
) -> None:
    """200 pods, each cancelled at a random moment from before its request to after its
    launch; then every request again after a launcher restart (a re-delivery)."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    run_id = f"race-{uuid.uuid4().hex[:8]}"
    keys = [TaskKey("ops", f"racer-{i}", run_id) for i in range(RACERS)]
    created: dict[str, list[float]] = {}

    def on_change(event: Any) -> None:
        annotations = event.obj["metadata"].get("annotations") or {}
        if event.type == "ADDED" and annotations.get("pipeline.dev/run_id") == run_id:
            created.setdefault(annotations["pipeline.dev/task_id"], []).append(time.time())

    remove = ops.emulator.store.add_listener(on_change)
    kafka, topics = ops.settings.kafka, ops.settings.topic
    requests = [
        (topics.requests, k.partition_key, encode(make_request(k, ["sleep", "60"], "kubernetes")))
        for k in keys
    ]
    try:
        async with started(make_producer(kafka, "race"), kafka) as producer:

            async def cancel_later(key: TaskKey, delay: float) -> None:
                await asyncio.sleep(delay)
                control = make_control(key, "race", "tester")
                await send_all(producer, [(topics.control, key.partition_key, encode(control))])

            delays = [rng.uniform(-0.5, 4.0) for _ in keys]
            early = [cancel_later(k, 0) for k, d in zip(keys, delays, strict=True) if d < 0]
            await asyncio.gather(*early)
            await send_all(producer, requests)
            await asyncio.gather(
                *(cancel_later(k, d) for k, d in zip(keys, delays, strict=True) if d >= 0)
            )
        states = await settle_run(ops, run_id, RACERS)
        wrong = {k: s["state"] for k, s in states.items() if s["state"] != "cancelled"}
        assert not wrong, f"seed {seed}: not cancelled: {wrong}"
        await until(lambda: not any(pod_exists(ops, k) for k in keys), timeout_s=60)
        late = {}
        for key in keys:
            cancelled_at = _cancelled_at(states[key.task_id])
            if any(t >= cancelled_at for t in created.get(key.task_id, [])):
                late[key.task_id] = (created[key.task_id], cancelled_at)
        assert not late, f"seed {seed}: pods created after their cancel: {late}"
        launched = sum(1 for k in keys if k.task_id in created)
        assert 0 < launched < RACERS, f"seed {seed}: {launched} launched: no race was run"

        await ops.restart_stage("launcher")
        created.clear()
        async with started(make_producer(kafka, "race-again"), kafka) as producer:
            await send_all(producer, requests)
        await eventually(
            lambda: _never_launched_at_least(ops, RACERS), timeout_s=90, interval_s=0.5
        )
        assert not created, f"seed {seed}: re-delivered cancelled requests became pods"
    finally:
        remove()


async def settle_run(env: DevEnvironment, run_id: str, count: int) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    async def all_terminal() -> bool:
        async with AsyncPipelineClient(env.api_url) as client:
            tasks = await client.tasks(run_id=run_id, limit=10_000)
        found.update({t["key"]["task_id"]: t for t in tasks})
        return len(found) == count and all(t["state"] in TERMINAL_STATES for t in found.values())

    await eventually(all_terminal, timeout_s=120, interval_s=0.5)
    return found


def _cancelled_at(state: dict[str, Any]) -> float:
    [step] = [s for s in state["history"] if s["state"] == "cancelled"]
    return parse_time(step["observed_at"]).timestamp()


async def _never_launched_at_least(env: DevEnvironment, count: int) -> bool:
    url = env.stage_url("launcher") + "/metrics"
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            text = await response.text()
    except aiohttp.ClientError:
        return False
    for line in text.splitlines():
        if line.startswith('pipeline_launcher_cancels_total{outcome="never_launched"}'):
            return float(line.split()[-1]) >= count
    return False
