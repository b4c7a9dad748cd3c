"""`pipeline bench launcher`: pods/s of the launcher stage against the API's own ceiling.

The emulator runs as its own process (`pipeline sandbox kube`, simulate mode, pods kept
running) like an API server would, and a sandbox broker holds the requests. The baseline is a
bare loop of `create_namespaced_pod` calls through the launcher's own client (`PodApi`: the
same thread pool, connection pool and raw responses) at the same concurrency, on bodies the
launcher's builder made; the subject is the launcher stage consuming N pre-published requests.
The launcher posts pre-built API dicts through the client's `call_api` rather than
`create_namespaced_pod`, so a third loop, bare creates on that same cheaper path, is reported
too (`raw_loop_per_s`): the launcher's cost beyond the HTTP exchange itself. All are timed from
their first create call to the N-th pod created; rounds alternate and medians count. Launch
latency (request published -> pod created) is measured apart, with requests published at
half the measured rate, so it shows the path and not a backlog. The launcher runs with its
shipped concurrency settings, and the baseline creates at the same concurrency;
`--api-latency-ms` adds that much to every API call (the emulator's fault injection), which
shows whether launch concurrency, rather than the API, is the ceiling. `--replicas N` adds two
arms, N launcher processes in one consumer group against one, both as separate processes
timed the same way: how far the launcher scales out (`replica_scaling`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableSequence
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pipeline import eventloop, messages, runtime
from pipeline.bench import BenchResult
from pipeline.config import (
    KubeSettings,
    LauncherSettings,
    RuntimeSettings,
    Settings,
    TopicSettings,
)
from pipeline.kafka import create_topics, make_producer, send_all, started
from pipeline.launcher.builder import PodSpecBuilder
from pipeline.launcher.kube_client import PodApi
from pipeline.launcher.merge import JsonObj
from pipeline.launcher.stage import LauncherStage
from pipeline.messages import TaskKey, TaskRequest
from pipeline.pods import pod_name
from pipeline.sandbox.broker import free_port, tansu_broker
from pipeline.sandbox.profile import sandbox_kafka
from pipeline.watcher.kube import core_v1

DEFAULT_N = 2000
CONCURRENCY = LauncherSettings().max_concurrent_creates
ROUNDS = 3
PARTITIONS = 4
WARMUP = 32


class CreateMeter:
    """When creates began, and when each pod was created, until `target` pods exist."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.first: float | None = None
        self.created_at: dict[str, float] = {}
        self.done = asyncio.Event()

    def started(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def created(self, name: str) -> None:
        self.created_at.setdefault(name, time.perf_counter())
        if len(self.created_at) >= self.target:
            self.done.set()

    @property
    def per_s(self) -> float:
        assert self.first is not None
        return len(self.created_at) / (max(self.created_at.values()) - self.first)


class TimedPodApi(PodApi):
    """The launcher's client, unchanged, with its creates timed once `meter` is set."""

    meter: CreateMeter | None = None

    async def create(self, pod: JsonObj) -> bool:
        if self.meter is not None:
            self.meter.started()
        created = await super().create(pod)
        if self.meter is not None:
            self.meter.created(pod["metadata"]["name"])
        return created


class TypedPodApi(TimedPodApi):
    """The baseline's client: each create through `create_namespaced_pod` (what a plain
    user of the client writes), with the same pool, concurrency and raw response."""

    def _create_sync(self, pod: JsonObj) -> None:
        response: Any = self._core.create_namespaced_pod(
            self.namespace,
            pod,  # type: ignore[arg-type]
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        try:
            response.read()
        finally:
            response.release_conn()


def requests_for(tag: str, n: int) -> list[TaskRequest]:
    """N launcher-sized requests: a run of one DAG, with env, labels and a pod override."""
    override = {"spec": {"containers": [{"name": "base", "resources": {"limits": {"cpu": "1"}}}]}}
    return [
        messages.make_request(
            TaskKey("bench", f"task-{i % 100}", f"{tag}-{i // 100}"),
            ["airflow", "tasks", "run", "bench", f"task-{i % 100}", f"{tag}-{i // 100}"],
            "kubernetes",
            env={"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"},
            labels={"team": "bench"},
            executor_config={"pod_override": override},
        )
        for i in range(n)
    ]


@contextlib.asynccontextmanager
async def emulator_process(
    run_seconds: float = 3600, latency_s: float = 0.0
) -> AsyncIterator[tuple[Path, int]]:
    """`pipeline sandbox kube` in simulate mode (pods run `run_seconds`, every call answered
    `latency_s` late); yields its kubeconfig and pid once it serves."""
    with tempfile.TemporaryDirectory(prefix="bench-kube-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "sandbox", "kube", "--port", str(free_port()),
            "--mode", "simulate", "--run-seconds", str(run_seconds),
            "--kubeconfig", str(kubeconfig),
            "--faults", json.dumps({"latency_seconds": latency_s}),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            env=dict(os.environ),
        )  # fmt: skip
        try:
            async with asyncio.timeout(30):
                while not kubeconfig.exists():
                    if process.returncode is not None:
                        raise RuntimeError("the kube emulator exited at start")
                    await asyncio.sleep(0.05)
            yield kubeconfig, process.pid
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()


def bench_settings(bootstrap: str, kubeconfig: Path) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    topics = {role: f"bench.{role}.{suffix}" for role in ("requests", "kubernetes", "celery",
              "events", "state", "dlq")}  # fmt: skip
    return Settings(
        kafka=sandbox_kafka(bootstrap),
        topic=TopicSettings(**topics, partitions=PARTITIONS),
        kube=KubeSettings(config=kubeconfig),
        launcher=LauncherSettings(
            parallelism=1_000_000,  # nothing finishes here: measure creates, not backpressure
        ),
        runtime=RuntimeSettings(instance="bench"),
    )


async def timed_api(settings: Settings, kind: type[TimedPodApi] = TimedPodApi) -> TimedPodApi:
    """A client whose connections are open, as a long-running launcher's would be."""
    api = kind(settings.kube, CONCURRENCY)
    builder = PodSpecBuilder.from_settings(settings, "bench")
    warm = [builder.build(r) for r in requests_for(f"warm-{uuid.uuid4().hex[:6]}", WARMUP)]
    await asyncio.gather(*(api.create(pod) for pod in warm))
    return api


async def bare_creates(
    settings: Settings, tag: str, n: int, kind: type[TimedPodApi] = TypedPodApi
) -> float:
    """The baseline: `CONCURRENCY` workers creating prebuilt pods as fast as the API allows."""
    builder = PodSpecBuilder.from_settings(settings, "bench")
    pods = iter([builder.build(r) for r in requests_for(tag, n)])
    api = await timed_api(settings, kind)
    api.meter = CreateMeter(n)

    async def worker() -> None:
        for pod in pods:
            await api.create(pod)

    try:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        api.close()
    return api.meter.per_s


async def publish(settings: Settings, topic: str, requests: list[TaskRequest]) -> None:
    async with started(make_producer(settings.kafka, "bench"), settings.kafka) as producer:
        await send_all(
            producer,
            [(topic, TaskKey.from_wire(r["key"]).partition_key, messages.encode(r))
             for r in requests],
        )  # fmt: skip


async def new_round(settings: Settings) -> Settings:
    """A fresh requests topic, consumer group and namespace, so a round reads only its own
    requests and a starting launcher lists only its own pods (not every earlier arm's)."""
    tag = uuid.uuid4().hex[:8]
    settings = settings.updated(
        topic={"kubernetes": f"bench.kubernetes.{tag}"},
        launcher={"group_id": f"bench-launcher-{tag}"},
        kube={"namespace": f"bench-{tag}"},
    )
    await create_topics(settings.kafka, settings.topic)
    core = core_v1(settings.kube)
    try:
        body = {"metadata": {"name": settings.kube.namespace}}
        await asyncio.to_thread(core.create_namespace, body, _preload_content=False)
    finally:
        core.api_client.close()
    return settings


async def launcher_creates(settings: Settings, tag: str, n: int) -> float:
    """The subject: the launcher stage draining N pre-published requests."""
    settings = await new_round(settings)
    await publish(settings, settings.topic.kubernetes, requests_for(tag, n))
    api = await timed_api(settings)
    api.meter = CreateMeter(n)
    async with runtime.running(LauncherStage(settings, api=api)):
        await asyncio.wait_for(api.meter.done.wait(), 600)
    return api.meter.per_s


@dataclass(frozen=True)
class ReplicaRun:
    """One drain by launcher processes: the pods/s of all together, and each one's share."""

    per_s: float
    created: list[int]


async def replica_creates(settings: Settings, tag: str, n: int, replicas: int) -> ReplicaRun:
    """N requests drained by `replicas` launcher processes in one consumer group.

    The requests are published only once every replica holds its partitions, so no run pays
    for a rebalance; timed from the first create of any replica to the N-th pod of all.
    """
    settings = await new_round(settings)
    spawn = multiprocessing.get_context("spawn")  # never fork a process with threads and a loop
    counts = spawn.Array("q", replicas, lock=False)
    pipes = [spawn.Pipe() for _ in range(replicas)]
    processes = [
        spawn.Process(target=_replica, args=(settings, i, counts, child), daemon=True)
        for i, (_, child) in enumerate(pipes)
    ]
    for process in processes:
        process.start()
    try:
        for parent, _ in pipes:
            await _receive(parent, 120)  # "ready"
        await publish(settings, settings.topic.kubernetes, requests_for(tag, n))
        async with asyncio.timeout(600):
            while sum(counts) < n:  # noqa: ASYNC110 - counters of other processes
                await asyncio.sleep(0.05)
        for parent, _ in pipes:
            parent.send("stop")
        reports: list[tuple[float | None, dict[str, float]]] = [
            await _receive(parent, 120) for parent, _ in pipes
        ]
    finally:
        for process in processes:
            await asyncio.to_thread(process.join, 30)
            if process.is_alive():
                process.kill()
    first = min(began for began, _ in reports if began is not None)
    last = max(max(created.values()) for _, created in reports if created)
    return ReplicaRun(n / (last - first), [len(created) for _, created in reports])


async def _receive(conn: Connection, timeout_s: float) -> Any:
    if not await asyncio.to_thread(conn.poll, timeout_s):
        raise TimeoutError(f"a launcher replica said nothing for {timeout_s:g}s")
    return conn.recv()


def _replica(
    settings: Settings, index: int, counts: MutableSequence[int], conn: Connection
) -> None:
    """A launcher replica's process: see `_serve_replica`."""
    eventloop.run(_serve_replica(settings, index, counts, conn))


async def _serve_replica(
    settings: Settings, index: int, counts: MutableSequence[int], conn: Connection
) -> None:
    """Run a launcher stage; say "ready" once it holds partitions, keep `counts[index]` at
    the pods created until told to stop, then send when creates began and each pod's time."""
    api = await timed_api(settings)
    meter = api.meter = CreateMeter(sys.maxsize)
    async with runtime.running(LauncherStage(settings, api=api)) as stage:
        while not stage.ready:  # noqa: ASYNC110 - a flag the stage sets, not an event
            await asyncio.sleep(0.02)
        conn.send("ready")
        stop = asyncio.ensure_future(asyncio.to_thread(conn.recv))
        while not stop.done():
            counts[index] = len(meter.created_at)
            await asyncio.wait([stop], timeout=0.05)
    conn.send((meter.first, meter.created_at))


async def launch_latency(settings: Settings, n: int, rate: float) -> list[float]:
    """Seconds from publishing each request to its pod's creation, published at `rate`/s."""
    settings = await new_round(settings)
    requests = requests_for(f"latency-{uuid.uuid4().hex[:6]}", n)
    api = await timed_api(settings)
    published: dict[str, float] = {}
    producer = make_producer(settings.kafka, "bench-paced")
    async with runtime.running(LauncherStage(settings, api=api)), started(producer, settings.kafka):
        # Warm up (group joined, partitions assigned) before timing anything.
        warm = requests_for(f"warm-{uuid.uuid4().hex[:6]}", WARMUP)
        api.meter = CreateMeter(WARMUP)
        await publish(settings, settings.topic.kubernetes, warm)
        await asyncio.wait_for(api.meter.done.wait(), 120)
        meter = api.meter = CreateMeter(n)
        began = time.perf_counter()
        for i, request in enumerate(requests):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            key = TaskKey.from_wire(request["key"])
            published[pod_name(key)] = time.perf_counter()
            await producer.send(
                settings.topic.kubernetes, messages.encode(request), key=key.partition_key
            )
        await asyncio.wait_for(meter.done.wait(), 600)
    return sorted(meter.created_at[name] - at for name, at in published.items())


def _cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used so far (Linux /proc), or None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def settle(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until the emulator idles: its kubelet moves each created pod on *after* the
    create, so without this an arm would pay for the previous arm's pods."""
    deadline = time.monotonic() + timeout_s
    last = _cpu_seconds(pid)
    while last is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = _cpu_seconds(pid)
        if now is None or now - last < 0.02:  # under a tenth of a core
            return
        last = now


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run(n: int = DEFAULT_N, api_latency_ms: float = 0.0, replicas: int = 1) -> BenchResult:
    with tansu_broker() as broker:
        async with emulator_process(latency_s=api_latency_ms / 1000) as (kubeconfig, emulator_pid):
            settings = bench_settings(broker.bootstrap_servers, kubeconfig)
            await create_topics(settings.kafka, settings.topic)
            baseline: list[float] = []
            subject: list[float] = []
            raw: list[float] = []
            one: list[float] = []
            many: list[float] = []
            shares: list[list[int]] = []

            async def processes(tag: str, count: int) -> float:
                drained = await replica_creates(settings, tag, n, count)
                if count == replicas:
                    shares.append(drained.created)
                return drained.per_s

            arms: list[tuple[list[float], Callable[[str], Awaitable[float]]]] = [
                (baseline, partial(bare_creates, settings, n=n)),
                (subject, partial(launcher_creates, settings, n=n)),
                (raw, partial(bare_creates, settings, n=n, kind=TimedPodApi)),
            ]
            if replicas > 1:
                arms += [
                    (one, partial(processes, count=1)),
                    (many, partial(processes, count=replicas)),
                ]
            for r in range(ROUNDS):  # the order rotates, so no arm always comes first
                for i in range(len(arms)):
                    results, arm = arms[(r + i) % len(arms)]
                    await settle(emulator_pid)
                    results.append(await arm(f"r{r}a{i}"))
            paced_rate = statistics.median(subject) / 2
            await settle(emulator_pid)  # the last arm's pods still moving would be timed
            latencies = await launch_latency(settings, max(n // 4, 100), paced_rate)
    scaling = {}
    if replicas > 1:
        scaling = {
            "one_process_per_s": round(statistics.median(one)),
            "replicas_per_s": round(statistics.median(many)),
            "rounds_one_process_per_s": [round(x) for x in one],
            "rounds_replicas_per_s": [round(x) for x in many],
            "replica_scaling": round(statistics.median(many) / statistics.median(one), 3),
            "pods_per_replica": shares,
        }
    return BenchResult(
        name="launcher",
        baseline=f"bare create_namespaced_pod loop, {CONCURRENCY} in flight",
        subject="launcher stage",
        baseline_per_s=statistics.median(baseline),
        subject_per_s=statistics.median(subject),
        params={
            "n": n,
            "concurrency": CONCURRENCY,
            "creation_batch_size": settings.launcher.creation_batch_size,
            "api_latency_ms": api_latency_ms,
            "replicas": replicas,
            "partitions": PARTITIONS,
            "rounds": ROUNDS,
            "kubelet": "simulate",
        },
        extra={
            "rounds_baseline_per_s": [round(x) for x in baseline],
            "rounds_subject_per_s": [round(x) for x in subject],
            "raw_loop_per_s": round(statistics.median(raw)),
            "rounds_raw_loop_per_s": [round(x) for x in raw],
            "ratio_to_raw_loop": round(statistics.median(subject) / statistics.median(raw), 3),
            "latency_rate_per_s": round(paced_rate),
            "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "latency_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
            **scaling,
        },
    )
