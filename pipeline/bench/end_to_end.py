"""`pipeline bench e2e`: the whole pipeline under a fixed offered rate (open loop).

Each step offers one rate for a fixed time: task i is due at `start + i / rate` and is timed
from that moment, not from when the sender got to it, so a slow pipeline cannot hide its
backlog (no coordinated omission). A task's milestones (queued, launched, running, terminal)
are the moments its events first show on `tasks.events` to the benchmark's own consumer, on
the benchmark's clock. Where the time went per hop comes from the events' own `observed_at`.
Achieved is the completion rate: tasks that reached a terminal state per second, over the
middle 90% of the completions (so a pipeline that keeps up shows the offered rate, whatever
its latency and jitter). A step passes when achieved >= 0.95 x offered, every task finished, and p99
submit -> launched < 1 s; the headline,
`subject_per_s`, is the highest offered rate that passed (the sustained rate). The baseline is
one bare produce-and-consume round trip per message through the same broker.

CPU seconds per task and RSS come from /proc for every process the sandbox runs: the broker,
each stage, the Celery worker, and this process, which also hosts the Kubernetes emulator.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from pipeline import messages
from pipeline.bench import BenchResult
from pipeline.config import Settings
from pipeline.kafka import make_consumer, make_producer, send_all, started
from pipeline.messages import TERMINAL_STATES, State, TaskKey
from pipeline.procstat import Usage, group_usage, own_children, process_usage
from pipeline.sandbox.broker import free_port
from pipeline.sandbox.dev import LOOPBACK, DevEnvironment, DevOptions, dev_environment
from pipeline.sandbox.kube import FaultConfig, Timings
from pipeline.stages import STAGES

DEFAULT_N = 1000  # round trips of the baseline
LADDER = (50, 100, 250, 500, 1000, 2000)
MILESTONES = ("queued", "launched", "running", "terminal")
HOPS = (
    ("submitted", "queued"),
    ("queued", "launched"),
    ("launched", "running"),
    ("running", "terminal"),
)
Executor = Literal["kubernetes", "celery", "mixed"]


@dataclass
class Options:
    rates: Sequence[float] = LADDER
    duration_s: float = 5.0
    executor: Executor = "kubernetes"
    replicas: int = 1
    api_latency_ms: float = 0.0
    parallelism: int | None = None
    partitions: int = 4
    drain_s: float = 10.0
    run_seconds: float = 0.05


@dataclass
class Track:
    """What the benchmark saw of one task: due time and first sighting of each milestone."""

    due: float
    submitted_at: datetime | None = None
    seen: dict[str, float] = field(default_factory=dict)
    observed: dict[str, datetime] = field(default_factory=dict)
    final: str | None = None


async def round_trip(settings: Settings, n: int) -> float:
    """Messages/s for n messages produced to, and consumed back from, one topic."""
    kafka, topic = settings.kafka, settings.topic.dlq  # any existing topic, read from its end
    consumer = make_consumer(
        kafka, topic, group_id=None, client_id="bench-e2e", auto_offset_reset="latest"
    )
    async with started(consumer, kafka), started(make_producer(kafka, "bench-e2e"), kafka) as p:
        await consumer.getmany(timeout_ms=500)  # position at the end before timing
        began = time.perf_counter()
        sending = asyncio.create_task(
            send_all(p, [(topic, str(i).encode(), b"x" * 300) for i in range(n)])
        )
        seen = 0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500)
            seen += sum(len(records) for records in batch.values())
        await sending
        return n / (time.perf_counter() - began)


def queue_of(i: int, executor: Executor, kubernetes_queue: str) -> str:
    if executor == "mixed":
        return kubernetes_queue if i % 2 == 0 else "default"
    return kubernetes_queue if executor == "kubernetes" else "default"


class Observer:
    """Follows `tasks.events` from its end and records each tracked task's milestones."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tracks: dict[str, Track] = {}  # by task id; ids are unique per run
        self.unfinished = 0
        self.done = asyncio.Event()

    def track(self, task_id: str, due: float) -> Track:
        self.tracks[task_id] = track = Track(due)
        self.unfinished += 1
        self.done.clear()
        return track

    async def follow(self, ready: asyncio.Event) -> None:
        kafka = self.settings.kafka
        consumer = make_consumer(
            kafka,
            self.settings.topic.events,
            group_id=None,
            client_id="bench-e2e-events",
            auto_offset_reset="latest",
        )
        async with started(consumer, kafka):
            await consumer.getmany(timeout_ms=500)
            ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        self.saw(record.value or b"null", now)

    def saw(self, raw: bytes, now: float) -> None:
        event = orjson.loads(raw)
        if not isinstance(event, dict) or not isinstance(event.get("key"), dict):
            return
        track = self.tracks.get(event["key"].get("task_id"))
        if track is None:
            return
        state = event.get("state")
        milestone = "terminal" if state in TERMINAL_STATES else state
        if milestone not in MILESTONES or milestone in track.seen:
            return
        track.seen[milestone] = now
        track.observed[milestone] = messages.parse_time(event["observed_at"])
        if milestone == "terminal":
            track.final = state
            self.unfinished -= 1
            if not self.unfinished:
                self.done.set()


def quantiles(values: list[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds (nearest rank); zeros when there is nothing."""
    if not values:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0), "n": len(ordered)}


async def offer(
    env: DevEnvironment, observer: Observer, options: Options, rate: float, count: int
) -> dict[str, Any]:
    """One step: `count` tasks at `rate`/s, then wait for them until the drain deadline."""
    settings = env.settings
    run_id = f"e2e-{rate:g}-{uuid.uuid4().hex[:6]}"
    argv = ["python", "-c", "pass"]
    before = usage(env)
    kafka = settings.kafka
    async with started(make_producer(kafka, "bench-e2e"), kafka) as producer:
        start = time.perf_counter() + 0.05
        sent: list[asyncio.Future[Any]] = []
        for i in range(count):
            due = start + i / rate
            if (lag := due - time.perf_counter()) > 0:
                await asyncio.sleep(lag)
            key = TaskKey("bench", f"{run_id}-{i}", run_id)
            request = messages.make_request(
                key, argv, queue_of(i, options.executor, settings.kubernetes_queue)
            )
            track = observer.track(key.task_id, due)
            track.submitted_at = messages.parse_time(request["submitted_at"])
            sent.append(
                await producer.send(
                    settings.topic.requests, messages.encode(request), key=key.partition_key
                )
            )
        sending_s = time.perf_counter() - start
        await asyncio.gather(*sent)
    deadline = start + count / rate + options.drain_s
    try:
        async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
            await observer.done.wait()
    except TimeoutError:
        pass
    after = usage(env)
    tracks = [observer.tracks.pop(f"{run_id}-{i}") for i in range(count)]
    observer.unfinished = 0
    return summarize(rate, tracks, start, sending_s, before, after)


def completion_rate(ends: list[float], rate: float) -> float:
    """Completions per second (sorted `ends`) over the middle 90% of them, never above the
    offered `rate`: the tails hold the spread of latencies, not the pipeline's pace, so a
    pipeline that keeps up reads the offered rate whatever its jitter, and one that falls
    behind spreads its completions over longer and reads lower."""
    if len(ends) < 2:
        return rate if ends else 0.0
    last = len(ends) - 1
    first, final = (round(0.05 * last), round(0.95 * last)) if last >= 20 else (0, last)
    return (final - first) / max(ends[final] - ends[first], (final - first) / rate)


def summarize(
    rate: float,
    tracks: list[Track],
    start: float,
    sending_s: float,
    before: dict[str, Usage],
    after: dict[str, Usage],
) -> dict[str, Any]:
    finished = [t for t in tracks if "terminal" in t.seen]
    achieved = completion_rate(sorted(t.seen["terminal"] for t in finished), rate)
    latency = {m: quantiles([t.seen[m] - t.due for t in tracks if m in t.seen]) for m in MILESTONES}
    hops: dict[str, dict[str, float]] = {}
    for a, b in HOPS:
        spans = []
        for t in tracks:
            since = t.submitted_at if a == "submitted" else t.observed.get(a)
            until = t.observed.get(b)
            if since is not None and until is not None:
                spans.append((until - since).total_seconds())
        hops[f"{a}->{b}"] = quantiles(spans)
    cpu = {name: round(after[name].cpu_s - before[name].cpu_s, 3) for name in after}
    per_task_ms = {name: round(s * 1000 / max(1, len(finished)), 3) for name, s in cpu.items()}
    passed = (
        achieved >= 0.95 * rate
        and latency["launched"]["p99_ms"] < 1000
        and (len(finished) == len(tracks))
    )
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(achieved, 1),
        "sent_per_s": round(len(tracks) / sending_s, 1) if sending_s else 0.0,
        "tasks": len(tracks),
        "not_terminal": len(tracks) - len(finished),
        "not_successful": sum(t.final != State.SUCCESS.value for t in finished),
        "passed": passed,
        "latency_from_due": latency,
        "hops_from_event_times": hops,
        "cpu_ms_per_task": per_task_ms | {"total": round(sum(per_task_ms.values()), 3)},
        "rss_mb": {
            name: [
                round(before[name].rss_bytes / 2**20, 1),
                round(after[name].rss_bytes / 2**20, 1),
            ]
            for name in after
        },
    }


def usage(env: DevEnvironment) -> dict[str, Usage]:
    groups = {
        name: child.process.pid
        for name, child in env.processes.children.items()
        if child.process is not None
    }
    groups |= {f"broker-{i}": pid for i, pid in enumerate(own_children("--listener-url"))}
    found = group_usage(groups)
    found["bench+emulator"] = process_usage(os.getpid())
    return found


async def add_replicas(env: DevEnvironment, replicas: int) -> None:
    """Start each stage `replicas - 1` more times (each reducer with its own API port)."""
    for copy in range(2, replicas + 1):
        for stage in STAGES:
            name, port = f"{stage}-{copy}", free_port()
            extra = {"PIPELINE_RUNTIME_HTTP_PORT": str(port)}
            if stage == "reducer":
                api = free_port()
                extra |= {
                    "PIPELINE_REDUCER_API_PORT": str(api),
                    "PIPELINE_REDUCER_API_URL": f"http://{LOOPBACK}:{api}",
                }
            await env.processes.start(name, "run", stage, env=extra)
            env.http_ports[name] = port
    await env.wait_ready()


def dev_options(options: Options) -> DevOptions:
    extra = (
        {"PIPELINE_LAUNCHER_PARALLELISM": str(options.parallelism)} if options.parallelism else {}
    )
    faults = FaultConfig(latency_seconds=options.api_latency_ms / 1000)
    return DevOptions(
        partitions=options.partitions,
        kube_mode="simulate",
        timings=Timings(run_seconds=options.run_seconds),
        faults=faults,
        extra_env=extra,
    )


async def run(n: int | None = None, options: Options | None = None) -> BenchResult:
    """The ladder (or the given rates), stopping after the first step that fails."""
    options = options or Options()
    async with dev_environment(dev_options(options)) as env:
        await env.wait_ready()
        await add_replicas(env, options.replicas)
        baseline = await round_trip(env.settings, DEFAULT_N)
        observer = Observer(env.settings)
        ready = asyncio.Event()
        following = asyncio.create_task(observer.follow(ready))
        try:
            await ready.wait()
            await offer(env, observer, options, 20, 20)  # warm-up: joins, first pods, caches
            steps = []
            for rate in options.rates:
                count = n or max(1, round(rate * options.duration_s))
                steps.append(await offer(env, observer, options, rate, count))
                if not steps[-1]["passed"]:
                    break
        finally:
            following.cancel()
    sustained = max((s["offered_per_s"] for s in steps if s["passed"]), default=0.0)
    return BenchResult(
        name="e2e",
        baseline="one Kafka round trip per message",
        subject="sustained offered rate, submit -> terminal, all stages",
        baseline_per_s=baseline,
        subject_per_s=sustained,
        params={
            "rates": list(options.rates),
            "duration_s": options.duration_s,
            "tasks_per_step": n,
            "executor": options.executor,
            "replicas": options.replicas,
            "api_latency_ms": options.api_latency_ms,
            "parallelism": options.parallelism,
            "partitions": options.partitions,
            "pod_run_seconds": options.run_seconds,
            "drain_s": options.drain_s,
            "kubelet": "simulate",
        },
        extra={"sustained_per_s": sustained, "steps": steps},
    )
