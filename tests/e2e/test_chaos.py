"""The chaos drill: mixed tasks while every stage (and the Celery worker) is SIGKILLed at random
moments and restarted, then every request published again after all finished.

What must hold: every task ends exactly as designed, one state record per try, no try ever
had a second pod, no command ran twice except a Celery one whose worker was killed while it
ran (rerun, as configured here, and recorded as lost), and the launcher holds no slot at the
end. The short form runs with the suite; `pytest -m chaos` runs the full drill (2,000 tasks,
every stage killed twice over).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from pipeline import messages
from pipeline.celery_bridge.app import make_app, make_ledger, task_id_for
from pipeline.kafka import count_records, make_producer, started
from pipeline.messages import Kind, State, TaskKey
from pipeline.sandbox.dev import STAGES, DevEnvironment, DevOptions, dev_environment
from pipeline.sandbox.kube import FaultConfig, Timings
from pipeline.sandbox.workload import STUCK_IMAGE, Workload, mixed_workload, task_argv, trace_file
from tests.e2e.test_end_to_end import FAST_SWEEPS, assert_outcomes, publish, settle
from tests.fixtures.kafka import read_all as read_all_records
from tests.fixtures.polling import eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.asyncio(loop_scope="module"),
]

VICTIMS = (*STAGES, "celery-worker")
CHAOS_ENV = {
    **FAST_SWEEPS,
    "PIPELINE_CELERY_RERUN_LOST_COMMANDS": "true",
    "PIPELINE_CELERY_EXECUTION_TIMEOUT_S": "30",
    "PIPELINE_CELERY_VISIBILITY_TIMEOUT_S": "40",
    "PIPELINE_CELERY_UNACKED_RESTORE_INTERVAL_S": "2",
    # a worker SIGKILLed with tasks it had taken but not started loses them (the filesystem
    # broker has no redelivery): the monitor re-sends them once they count as stalled
    "PIPELINE_CELERY_STALLED_TASK_TIMEOUT_S": "90",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chaos_env() -> AsyncIterator[DevEnvironment]:
    options = DevOptions(
        kube_mode="process",
        faults=FaultConfig(stuck_pending_images=STUCK_IMAGE),
        timings=Timings(pending_seconds=0.0, run_seconds=0.05, backoff_seconds=0.05),
        extra_env=CHAOS_ENV,
    )
    async with dev_environment(options) as env:
        await env.wait_ready()
        yield env


class PodLog:
    """Every pod the emulator ever created, by name: more than one uid is a second pod."""

    def __init__(self, env: DevEnvironment) -> None:
        self.uids: dict[str, set[str]] = defaultdict(set)
        self.close = env.emulator.store.add_listener(self._on_event)

    def _on_event(self, event: Any) -> None:
        if event.type == "ADDED":
            meta = event.obj["metadata"]
            self.uids[meta["name"]].add(meta["uid"])

    def twice(self) -> dict[str, int]:
        return {name: len(uids) for name, uids in self.uids.items() if len(uids) > 1}


async def kill_and_restart(env: DevEnvironment, name: str) -> float | None:
    """SIGKILL the stage's whole process group, start it again; seconds until it is ready."""
    child = env.processes.children[name]
    child.kill_group()
    assert child.process is not None
    await child.process.wait()
    began = time.monotonic()
    await child.start()
    if name not in env.http_ports:
        return None
    url = f"{env.stage_url(name)}/readyz"

    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, timeout_s=180, interval_s=0.1)
    return time.monotonic() - began


async def in_flight(env: DevEnvironment) -> float:
    url = f"{env.stage_url('launcher')}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    line = next(x for x in text.splitlines() if x.startswith("pipeline_launcher_in_flight "))
    return float(line.split()[1])


def lost_celery_tries(env: DevEnvironment, work: Workload) -> set[TaskKey]:
    """Celery tries whose completion record says their first worker died mid-command."""
    celery = env.settings.celery
    ledger = make_ledger(make_app(celery), celery)
    keys = [k for k, executor in work.executors.items() if executor == "celery"]
    return {k for k in keys if (ledger.completed(task_id_for(k)) or {}).get("lost")}


async def drill(
    env: DevEnvironment,
    tmp_path: Path,
    tasks: int,
    rounds: int,
    seed: int,
    resume_within_s: float | None = None,
) -> None:
    """Mixed tasks while every stage is SIGKILLed and restarted in turn, `rounds` times over;
    with `resume_within_s`, each restarted stage must be serving again within that."""
    rng = random.Random(seed)
    run_id = f"chaos-{tasks}-{seed}"
    work = mixed_workload(
        tasks, run_id, disallowed=1, stuck_pending=1, duplicates=tasks // 10, trace_dir=tmp_path
    )
    pods = PodLog(env)
    dlq = env.settings.topic.dlq
    letters_before = await count_records(env.settings.kafka, dlq)
    kills = [name for _ in range(rounds) for name in rng.sample(VICTIMS, len(VICTIMS))]
    chunks = [work.records[i :: len(kills) + 1] for i in range(len(kills) + 1)]
    resumed: dict[str, list[float]] = defaultdict(list)
    try:
        await publish(env, chunks[0])
        for name, chunk in zip(kills, chunks[1:], strict=True):
            await asyncio.sleep(rng.uniform(0.2, 2.0))  # a random moment, not a synchronisation
            took = await kill_and_restart(env, name)
            if took is not None:
                resumed[name].append(round(took, 1))
            await publish(env, chunk)
        await env.wait_ready(timeout_s=300)
        assert_outcomes(work, await settle(env, work))

        # Duplicates and replays: every request again, after all finished; a fresh batch
        # behind them on every partition tells when the replay has been worked through.
        await publish(env, work.valid)
        behind = mixed_workload(80, f"{run_id}-behind")
        await publish(env, behind.records)
        assert_outcomes(behind, await settle(env, behind))

        assert pods.twice() == {}, "tries with a second pod"
        runs = {k: len(trace_file(tmp_path, k).read_text().splitlines())
                for k in work.expected if trace_file(tmp_path, k).exists()}  # fmt: skip
        lost = lost_celery_tries(env, work)
        again = {k: n for k, n in runs.items() if n > 1}
        assert set(again) <= lost and all(n == 2 for n in again.values()), (
            f"commands that ran more than once without a lost worker: {again}"
        )
        never = ("disallowed", "stuck")  # refused by policy; never out of Pending
        ran = {k for k, e in work.executors.items() if e != "none"}
        ran = {k for k in ran if not k.task_id.startswith(never)}
        assert set(runs) == ran, "every command that may run ran once at least"
        await eventually(lambda: _is_zero(env), timeout_s=60)
        letters = await count_records(env.settings.kafka, dlq) - letters_before
        assert letters >= work.invalid  # a router killed before its commit re-letters a few
        print(f"chaos {tasks} tasks: resumed after kill (s) {dict(resumed)}; "
              f"celery commands rerun after a worker kill: {len(lost)}")  # fmt: skip
        if resume_within_s is not None:
            slow = {n: t for n, ts in resumed.items() for t in ts if t > resume_within_s}
            assert not slow, f"stages that took over {resume_within_s} s to resume: {slow}"
    finally:
        pods.close()


async def _is_zero(env: DevEnvironment) -> bool:
    return await in_flight(env) == 0


async def test_chaos_short_form(chaos_env: DevEnvironment, tmp_path: Path) -> None:
    await drill(chaos_env, tmp_path, tasks=300, rounds=1, seed=17)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
async def test_chaos_full_drill(chaos_env: DevEnvironment, tmp_path: Path) -> None:
    await drill(chaos_env, tmp_path, tasks=2000, rounds=2, seed=2000, resume_within_s=10.0)


def garbage(key: TaskKey) -> list[bytes | None]:
    """What a hostile or broken producer sends: none of it may stop anything."""
    request = messages.encode(messages.make_request(key, ["python", "-c", "pass"], "default"))
    deep = b'{"schema_version":1,"key":' + b"[" * 500 + b"]" * 500 + b"}"
    return [
        None,  # a tombstone
        b"",
        bytes(range(256)),
        request[: len(request) // 2],
        deep,
        b'{"a":' * 300 + b"1" + b"}" * 300,
        request.replace(b'"command":["python"', b'"command":[7'),  # a wrong type
        request.replace(b'"schema_version":1', b'"schema_version":9'),
        request.replace(b'"map_index":-1', b'"map_index":-5'),
        request.replace(b'"map_index":-1', b'"map_index":NaN'),
        request.replace(b'"pass"', b'"' + b"x" * 900_000 + b'"', 1)[:-1] + b',"bogus":1}',
    ]


async def publish_at(env: DevEnvironment, records: list[tuple[str, bytes | None]]) -> set[Any]:
    """Publish (topic, value) records; where each landed: (topic, partition, offset)."""
    kafka = env.settings.kafka
    async with started(make_producer(kafka, "hostile"), kafka) as producer:
        sent = [await producer.send(topic, value, key=b"hostile") for topic, value in records]
        placed = await asyncio.gather(*sent)
    return {(m.topic, m.partition, m.offset) for m in placed}


async def healthy(env: DevEnvironment) -> dict[str, int]:
    statuses = {}
    async with aiohttp.ClientSession() as session:
        for name in env.http_ports:
            async with session.get(f"{env.stage_url(name)}/healthz") as response:
                statuses[name] = response.status
    return statuses


async def test_garbage_in_every_consumed_topic_stops_nothing(chaos_env: DevEnvironment) -> None:
    """Into every topic a stage consumes: random bytes, tombstones, truncated and 500-deep
    JSON, wrong types, bad versions, negative numbers, NaN, a 900 KB invalid request. Each
    lands on the DLQ exactly once (the internal ledger and checkpoint topics skip it), and
    valid tasks published around it still end as designed."""
    env, topics = chaos_env, chaos_env.settings.topic
    work = mixed_workload(120, "hostile")
    spelled = TaskKey("hostile-floats", "t", "hostile", 7, 2)
    floats = messages.encode(messages.make_request(spelled, task_argv(0, 0.0), "default"))
    floats = floats.replace(b'"map_index":7', b'"map_index":7.0').replace(
        b'"try_number":2', b'"try_number":2.0'
    )
    lettered = (
        topics.requests, topics.kubernetes, topics.celery, topics.events, topics.control,
        topics.logs,
    )  # fmt: skip
    skipped = (topics.launches, topics.watcher_checkpoints)
    bad = garbage(TaskKey("hostile", "bad", "hostile-garbage"))  # a run of its own
    await publish(env, work.records[:60])
    places = await publish_at(env, [(t, value) for t in lettered for value in bad])
    await publish_at(env, [(t, value) for t in skipped for value in bad])
    await publish(env, [*work.records[60:], (spelled.partition_key, floats)])

    work.expected[spelled], work.executors[spelled] = State.SUCCESS, "celery"
    assert_outcomes(work, await settle(env, work))
    letters = [
        messages.decode(Kind.DEAD_LETTER, r.value)
        for r in await read_all_records(env.settings, topics.dlq)
    ]
    sources = [tuple(x["source"][f] for f in ("topic", "partition", "offset")) for x in letters]
    ours = [s for s in sources if s in places]
    assert sorted(ours) == sorted(places), "every bad record lettered exactly once"
    assert set((await healthy(env)).values()) == {200}
    assert not env.processes.exited()
