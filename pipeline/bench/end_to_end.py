"""`pipeline bench e2e`: tasks from submit to terminal state through every stage.

Baseline: the same number of messages making one produce-and-consume round trip through
the same broker, the least any task needs. Subject: N successful tasks (half Kubernetes
pods in a simulate-mode kubelet, half Celery tasks) from `submit` until the reducer holds
their terminal state. Latencies come from the reducer's history: submit -> launched and
submit -> terminal, p50 and p99.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime
from typing import Any

import aiohttp

from pipeline import messages
from pipeline.bench import BenchResult
from pipeline.config import Settings
from pipeline.kafka import make_consumer, make_producer, send_all, started
from pipeline.messages import TERMINAL_STATES, TaskKey
from pipeline.sandbox.dev import DevEnvironment, DevOptions, dev_environment
from pipeline.sandbox.kube import Timings

DEFAULT_N = 1000


async def round_trip(settings: Settings, n: int) -> float:
    """Messages/s for n messages produced to, and consumed back from, one topic."""
    kafka, topic = settings.kafka, settings.topic.dlq  # any existing topic, read from its end
    consumer = make_consumer(kafka, topic, group_id=None, client_id="bench-e2e",
                             auto_offset_reset="latest")  # fmt: skip
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


def workload(n: int, run_id: str, kubernetes_queue: str) -> list[tuple[bytes, bytes]]:
    records = []
    for i in range(n):
        queue = kubernetes_queue if i % 2 == 0 else "default"
        argv = ["python", "-c", "pass"]
        request = messages.make_request(TaskKey("bench", f"t{i}", run_id), argv, queue)
        records.append((TaskKey.from_wire(request["key"]).partition_key, messages.encode(request)))
    return records


async def states(env: DevEnvironment, run_id: str) -> list[dict[str, Any]]:
    url = f"{env.api_url}/tasks?run_id={run_id}&limit=1000000"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        response.raise_for_status()
        found: list[dict[str, Any]] = (await response.json())["tasks"]
        return found


def seconds(since: str, until: str) -> float:
    return (datetime.fromisoformat(until) - datetime.fromisoformat(since)).total_seconds()


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": values[0] if values else 0.0, "p99": values[0] if values else 0.0}
    cuts = statistics.quantiles(values, n=100)
    return {"p50": round(cuts[49], 4), "p99": round(cuts[98], 4)}


def latencies(found: list[dict[str, Any]], submitted: dict[str, str]) -> dict[str, Any]:
    launched, terminal = [], []
    for state in found:
        start = submitted[state["key"]["task_id"]]
        for step in state["history"]:
            if step["state"] == "launched":
                launched.append(seconds(start, step["observed_at"]))
            if step["state"] in TERMINAL_STATES:
                terminal.append(seconds(start, step["observed_at"]))
    return {
        "submit_to_launched_s": percentiles(sorted(launched)),
        "submit_to_terminal_s": percentiles(sorted(terminal)),
    }


async def run(n: int = DEFAULT_N) -> BenchResult:
    options = DevOptions(kube_mode="simulate", timings=Timings(run_seconds=0.05))
    async with dev_environment(options) as env:
        await env.wait_ready()
        baseline = await round_trip(env.settings, n)
        run_id = f"bench-{int(time.time())}"
        records = workload(n, run_id, env.settings.kubernetes_queue)
        submitted = {
            request["key"]["task_id"]: request["submitted_at"]
            for request in map(messages.decode_request, (value for _, value in records))
        }
        began = time.perf_counter()
        kafka = env.settings.kafka
        async with started(make_producer(kafka, "bench-e2e"), kafka) as producer:
            await send_all(producer, [(env.settings.topic.requests, k, v) for k, v in records])
        while True:
            found = await states(env, run_id)
            if sum(s["state"] in TERMINAL_STATES for s in found) >= n:
                break
            await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - began
    failed = sum(s["state"] != "success" for s in found)
    return BenchResult(
        name="e2e",
        baseline="one Kafka round trip per message",
        subject="submit -> terminal state, all stages",
        baseline_per_s=baseline,
        subject_per_s=n / elapsed,
        params={"n": n, "kubelet": "simulate", "executors": "half kubernetes, half celery"},
        extra={"not_successful": failed, **latencies(found, submitted)},
    )
