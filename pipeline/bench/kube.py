"""`pipeline bench kube`: pod creates/s the emulator serves, against a parse-and-answer server.

Both servers run in this process on this loop and get the same aiohttp client, pod bodies
and concurrency, so the ratio is what the emulator's API work (validation, defaulting,
indexing, history, the kubelet's reaction) costs over bare HTTP + JSON. It must stay high so
that launcher benchmarks measure the launcher, not the emulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from pipeline.bench import BenchResult
from pipeline.sandbox.kube import KubeEmulator, Mode

DEFAULT_N = 2000
WARMUP = 50
NAMESPACE = "bench"


def pod_body(i: int, prefix: str) -> bytes:
    """A launcher-sized pod: labels, annotations, one container with command and env."""
    return orjson.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{prefix}-{i}",
                "labels": {"airflow-worker": "bench", "dag_id": "bench_dag", "try_number": "1"},
                "annotations": {"task_id": f"task-{i}", "run_id": "manual__2024-01-01"},
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "base",
                        "image": "apache/airflow:2.10.0",
                        "args": ["airflow", "tasks", "run", "bench_dag", f"task-{i}"],
                        "env": [{"name": "AIRFLOW__CORE__EXECUTOR", "value": "LocalExecutor"}],
                    }
                ],
            },
        }
    )


async def _echo_pod(request: web.Request) -> web.Response:
    """The baseline server: parse the body and answer it, nothing else."""
    pod = orjson.loads(await request.read())
    return web.Response(body=orjson.dumps(pod), status=201, content_type="application/json")


async def _creates_per_second(base_url: str, n: int, concurrency: int, prefix: str) -> float:
    url = f"{base_url}/api/v1/namespaces/{NAMESPACE}/pods"
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def post(i: int, tag: str) -> None:
            async with session.post(url, data=pod_body(i, f"{prefix}-{tag}")) as response:
                await response.read()
                if response.status != 201:
                    raise RuntimeError(f"create answered {response.status}")

        await _drive(lambda i: post(i, "warm"), WARMUP, concurrency)
        started = time.perf_counter()
        await _drive(lambda i: post(i, "run"), n, concurrency)
        return n / (time.perf_counter() - started)


async def _drive(request: Callable[[int], Awaitable[None]], n: int, concurrency: int) -> None:
    """`concurrency` workers sharing one counter: a closed loop, like a launcher's batches."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await request(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _baseline(n: int, concurrency: int) -> float:
    app = web.Application()
    app.router.add_post("/api/v1/namespaces/{namespace}/pods", _echo_pod)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        return await _creates_per_second(f"http://127.0.0.1:{port}", n, concurrency, "base")
    finally:
        await runner.cleanup()


async def run(n: int = DEFAULT_N, concurrency: int = 32, mode: Mode = "simulate") -> BenchResult:
    baseline = await _baseline(n, concurrency)
    async with KubeEmulator(port=0, mode=mode, namespace=NAMESPACE) as emulator:
        subject = await _creates_per_second(emulator.url, n, concurrency, "emu")
        extra: dict[str, Any] = {"pods_stored": len(emulator.store)}
    return BenchResult(
        name="kube",
        baseline="aiohttp parse-and-answer server",
        subject=f"kube emulator (kubelet {mode})",
        baseline_per_s=baseline,
        subject_per_s=subject,
        params={"n": n, "concurrency": concurrency, "mode": mode},
        extra=extra,
    )
