"""`pipeline bench reducer`: the reducer's fold rate against a bare fold-and-changelog loop.

Both read the same N pre-published events (task lifecycles: queued, launched, running,
success) from one sandbox broker. The baseline is the honest ceiling of what the reducer
does: a bare aiokafka loop that consumes, decodes, folds and writes each touched state once
per batch to a changelog topic, waiting for the broker's acks. The subject is `pipeline run
reducer` (the faust worker, in its own process, as deployed) folding them into its table
and changelog, timed from its first folded event to its N-th as its `/stats` reports them
(group join and recovery are not timed), and how much its resident memory grew per task
folded meanwhile (the table holds every task's state). Also measured: a bare consume loop
that only counts records (the old baseline), the pure fold without Kafka, and the time
`pipeline replay events --rebuild` needs to rebuild state from the N events (read to the
high-water + refold), and how long a second reducer, started after the first stopped, takes
from its start to ready (its table recovered from the changelog) while its `/stats` is read
once a second, as the dashboard reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiokafka import TopicPartition

from pipeline.bench import BenchResult
from pipeline.config import Settings, TopicSettings
from pipeline.kafka import create_topics, make_consumer, make_producer, send_all, started
from pipeline.messages import State, TaskEvent, TaskKey, decode_event, encode, make_event
from pipeline.procstat import process_usage
from pipeline.reducer.fold import TaskState, fold_event, state_key
from pipeline.replay import collect, read_range, rebuild_records
from pipeline.sandbox.broker import free_port, tansu_broker
from pipeline.sandbox.profile import sandbox_env, sandbox_kafka

DEFAULT_N = 20_000
PARTITIONS = 4
PUBLISH_CHUNK = 2000
PURE_SAMPLE = 100_000
POLL_S = 0.02
"""How often the subject's /stats is read: the timed span is a second or two, so its ends
must be seen to within a few per cent."""
DASHBOARD_POLL_S = 1.0  # the dashboard's default push interval
LIFECYCLE = (State.QUEUED, State.LAUNCHED, State.RUNNING, State.SUCCESS)


def events(n: int) -> list[TaskEvent]:
    """N events: whole lifecycles of n/4 tasks, in order per task."""
    out = []
    for i in range(0, n, len(LIFECYCLE)):
        key = TaskKey("bench", f"task-{i % 1000}", f"run-{i // 1000}")
        out += [make_event(key, "watcher", s) for s in LIFECYCLE][: n - i]
    return out


async def prepublish(settings: Settings, batch: list[TaskEvent]) -> None:
    async with started(make_producer(settings.kafka, "bench"), settings.kafka) as producer:
        for start in range(0, len(batch), PUBLISH_CHUNK):
            chunk = batch[start : start + PUBLISH_CHUNK]
            await send_all(
                producer,
                [
                    (settings.topic.events, TaskKey.from_wire(e["key"]).partition_key, encode(e))
                    for e in chunk
                ],
            )


async def bare_consume(settings: Settings, n: int) -> float:
    """The baseline: assign all partitions and count N records, nothing else."""
    consumer = make_consumer(settings.kafka, group_id=None, client_id="bench-bare")
    async with started(consumer, settings.kafka):
        consumer.assign([TopicPartition(settings.topic.events, p) for p in range(PARTITIONS)])
        seen, began = 0, time.perf_counter()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            seen += sum(len(records) for records in batch.values())
        return n / (time.perf_counter() - began)


async def bare_fold(settings: Settings, n: int) -> float:
    """The baseline: consume, decode, fold, and write touched states to a changelog per batch."""
    kafka, limit = settings.kafka, settings.reducer.history_limit
    changelog = f"{settings.topic.state}.baseline"
    await create_topics(kafka, settings.topic.model_copy(update={"state": changelog}))
    consumer = make_consumer(kafka, group_id=None, client_id="bench-bare-fold")
    async with started(consumer, kafka), started(make_producer(kafka, "bench"), kafka) as producer:
        consumer.assign([TopicPartition(settings.topic.events, p) for p in range(PARTITIONS)])
        states: dict[bytes, TaskState] = {}
        seen, began = 0, time.perf_counter()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            touched: dict[bytes, TaskState] = {}
            for records in batch.values():
                for record in records:
                    event = decode_event(record.value or b"")
                    key = state_key(event["key"])
                    current = touched.get(key) or states.get(key)
                    touched[key], _ = fold_event(current, event, limit)
                seen += len(records)
            states |= touched
            await send_all(producer, [(changelog, k, encode(s)) for k, s in touched.items()])
        return n / (time.perf_counter() - began)


def pure_fold(batch: list[TaskEvent], history_limit: int) -> float:
    """Decode and fold the same events in-process (no Kafka): the fold's own ceiling."""
    raw = [encode(e) for e in batch]
    states: dict[bytes, TaskState] = {}
    began = time.perf_counter()
    for value in raw:
        event = decode_event(value)
        key = state_key(event["key"])
        states[key], _ = fold_event(states.get(key), event, history_limit)
    return len(raw) / (time.perf_counter() - began)


async def reducer_process(settings: Settings, n: int) -> dict[str, float]:
    """`pipeline run reducer` in a subprocess, timed between its 1st and N-th folded event."""
    async with spawned_reducer(settings) as (process, url):
        return await time_folding(f"{url}/stats?scope=local", n, process)


async def recovery(settings: Settings) -> dict[str, float]:
    """A second reducer, started after the first stopped: from its start until it is ready
    (its table recovered from the changelog), its `/stats` read once a second meanwhile, as
    the dashboard reads it."""
    async with spawned_reducer(settings) as (process, url):
        began = time.perf_counter()
        next_stats = began
        async with aiohttp.ClientSession() as session, asyncio.timeout(300):
            while True:
                now = time.perf_counter()
                if now >= next_stats:
                    next_stats = now + DASHBOARD_POLL_S
                    await _get(session, f"{url}/stats?scope=local", process)
                if (ready := await _get(session, f"{url}/readyz", process)) and ready["ready"]:
                    ready_s = time.perf_counter() - began
                    stats = await _get(session, f"{url}/stats?scope=local", process)
                    return {"recovery_s": ready_s, "recovered_tasks": stats["tasks"]}
                await asyncio.sleep(POLL_S)


@contextlib.asynccontextmanager
async def spawned_reducer(
    settings: Settings,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`pipeline run reducer` as deployed, in its own process; its API's base URL."""
    port = free_port()
    env = {
        **os.environ,
        **environment(settings),
        "PIPELINE_REDUCER_API_PORT": str(port),
        "PIPELINE_RUNTIME_HTTP_PORT": str(free_port()),  # its probes; not the shared default
    }
    argv = [sys.executable, "-c", "from pipeline.cli import main; main()", "run", "reducer"]
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _get(
    session: aiohttp.ClientSession, url: str, process: asyncio.subprocess.Process
) -> Any:
    """The JSON at `url`, or None while the reducer does not answer (it is starting)."""
    try:
        async with session.get(url) as response:
            return await response.json(content_type=None)
    except aiohttp.ClientError:
        if process.returncode is not None:
            raise RuntimeError(f"the reducer exited with {process.returncode}") from None
        return None


async def time_folding(url: str, n: int, process: asyncio.subprocess.Process) -> dict[str, float]:
    """Events/s from the first poll that sees events folded to the one that sees N. When one
    poll already sees all N (a small N), from the last poll that saw none: a lower bound."""
    first: tuple[float, int] | None = None
    none_yet = time.perf_counter()
    rss_first = 0
    deadline_s = 120 + n / 500  # generous: the worker folds tens of thousands of events/s
    async with aiohttp.ClientSession() as session, asyncio.timeout(deadline_s):
        while True:
            try:
                async with session.get(url) as response:
                    folded = sum((await response.json())["outcomes"].values())
            except aiohttp.ClientError:
                if process.returncode is not None:
                    raise RuntimeError(f"the reducer exited with {process.returncode}") from None
                folded = 0
            now = time.perf_counter()
            if not folded:
                none_yet = now
            if folded and first is None:
                first = (now, folded) if folded < n else (none_yet, 0)
                rss_first = process_usage(process.pid).rss_bytes
            if folded >= n and first is not None:
                per_s = (folded - first[1]) / (now - first[0]) if now > first[0] else 0.0
                grown = process_usage(process.pid).rss_bytes - rss_first
                tasks = (folded - first[1]) / len(LIFECYCLE)
                return {
                    "per_s": per_s,
                    "timed_events": folded - first[1],
                    "rss_mb_at_first_event": rss_first / 2**20,
                    "rss_kb_per_task": grown / 1024 / tasks if tasks else 0.0,
                }
            await asyncio.sleep(POLL_S)


async def rebuild(settings: Settings) -> dict[str, float]:
    """Time to rebuild state from the events topic, as `replay --rebuild` does."""
    began = time.perf_counter()
    records = await collect(read_range(settings.kafka, settings.topic.events))
    read_s = time.perf_counter() - began
    states = rebuild_records(records, settings)
    total_s = time.perf_counter() - began
    return {"rebuild_s": total_s, "rebuild_read_s": read_s, "rebuild_states": len(states)}


def environment(settings: Settings) -> dict[str, str]:
    env = {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "PIPELINE_TOPIC_PARTITIONS": str(PARTITIONS),
        "PIPELINE_RUNTIME_LOG_LEVEL": "WARNING",
        **sandbox_env(),
    }
    for role in ("requests", "kubernetes", "celery", "events", "state", "dlq"):
        env[f"PIPELINE_TOPIC_{role.upper()}"] = getattr(settings.topic, role)
    return env


def bench_settings(bootstrap: str) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    names = {r: f"bench.{r}.{suffix}" for r in ("requests", "kubernetes", "celery", "events",
             "state", "dlq")}  # fmt: skip
    return Settings(
        kafka=sandbox_kafka(bootstrap),
        topic=TopicSettings(**names, partitions=PARTITIONS),
    )


async def run(n: int) -> BenchResult:
    batch = events(n)
    with tansu_broker() as broker:
        settings = bench_settings(broker.bootstrap_servers)
        await create_topics(settings.kafka, settings.topic)
        await prepublish(settings, batch)
        consume_only = await bare_consume(settings, n)
        baseline = await bare_fold(settings, n)
        subject = await reducer_process(settings, n)
        recovered = await recovery(settings)
        rebuilt = await rebuild(settings)
    extra: dict[str, Any] = {
        "bare_consume_per_s": round(consume_only),
        "pure_fold_per_s": round(pure_fold(batch[:PURE_SAMPLE], settings.reducer.history_limit)),
        "timed_events": subject["timed_events"],
        "rss_mb_at_first_event": round(subject["rss_mb_at_first_event"], 1),
        "rss_kb_per_task": round(subject["rss_kb_per_task"], 2),
        "recovery_s": round(recovered["recovery_s"], 2),
        "recovered_tasks": recovered["recovered_tasks"],
        **{k: round(v, 2) for k, v in rebuilt.items()},
        "rebuild_per_s": round(n / rebuilt["rebuild_s"]),
    }
    return BenchResult(
        name="reducer",
        baseline="bare aiokafka consume + decode + fold + changelog loop",
        subject="reducer (faust worker) folding",
        baseline_per_s=baseline,
        subject_per_s=subject["per_s"],
        params={"n": n, "partitions": PARTITIONS, "tasks": n // len(LIFECYCLE)},
        extra=extra,
    )
