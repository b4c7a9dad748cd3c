"""The router stage on a real broker: where mixed input lands, order per key, commits,
and three `pipeline run router` processes surviving the SIGKILL of one of them."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from pipeline import messages, runtime
from pipeline.config import Settings, load_settings
from pipeline.messages import TaskKey
from pipeline.router import LAG, Router
from pipeline.sandbox.broker import free_port
from tests.fixtures.kafka import read_all, read_records
from tests.fixtures.polling import eventually
from tests.fixtures.router import publish, request, router_running

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_mixed_input_lands_exactly_where_it_should(router_env: Settings) -> None:
    s = router_env
    keys = [TaskKey("mix", f"t{i}", "r1") for i in range(60)]
    valid = (
        [request(k, "kubernetes") for k in keys[:20]]
        + [request(k, "gpu") for k in keys[20:35]]
        + [request(k, "default") for k in keys[35:60]]
    )
    bad_key = TaskKey("mix", "bad", "r1")
    invalid: list[tuple[bytes | None, bytes]] = [
        (None, b"not json at all"),
        (b"k", b"[1, 2, 3]"),
        request(bad_key, "default", command=[]),
        request(TaskKey("mix", "bad", "r2"), "default", schema_version=7),
        request(TaskKey("mix", "bad", "r3"), "default", env={"PAD": "x" * 5000}),
        request(TaskKey("mix", "bad", "r4"), "nowhere"),
    ]
    before = {t: metric("pipeline_router_routed_total", target=t) for t in ("kubernetes", "celery")}
    letters_before = metric("pipeline_router_dead_lettered_total", reason="schema")
    await publish(s, [*valid[:30], *invalid, *valid[30:]])

    async with router_running(s):
        await read_records(s, s.topic.dlq, len(invalid))
        await read_records(s, s.topic.events, len(valid) + 4)
    kube = await read_all(s, s.topic.kubernetes)
    celery = await read_all(s, s.topic.celery)
    assert sorted(r.key for r in kube) == sorted(k.partition_key for k in keys[:35])
    assert sorted(r.key for r in celery) == sorted(k.partition_key for k in keys[35:])
    routed = [messages.decode_request(r.value) for r in kube + celery]
    assert all(r["routing"]["topic"] in (s.topic.kubernetes, s.topic.celery) for r in routed)

    letters = [
        messages.decode(messages.Kind.DEAD_LETTER, r.value) for r in await read_all(s, s.topic.dlq)
    ]
    whole = [x for x in letters if "truncated" not in x]
    by_original = {messages.dead_letter_original(x): x["error"]["code"] for x in whole}
    assert by_original == {
        invalid[0]: "not_json", invalid[1]: "not_object", invalid[2]: "schema",
        invalid[3]: "unknown_schema_version", invalid[5]: "no_route",
    }  # fmt: skip
    [cut] = [x for x in letters if "truncated" in x]  # too big to quote whole in a letter
    assert cut["error"]["code"] == "oversized"
    assert cut["truncated"]["original"]["size"] == len(invalid[4][1])
    assert invalid[4][1].startswith(messages.dead_letter_original(cut)[1])
    assert {x["source"]["topic"] for x in letters} == {s.topic.requests}

    events = [messages.decode_event(r.value) for r in await read_all(s, s.topic.events)]
    states = Counter((e["state"], e.get("executor")) for e in events)
    assert states == {("queued", "kubernetes"): 35, ("queued", "celery"): 25,
                      ("dead_lettered", None): 4}  # fmt: skip
    assert metric("pipeline_router_routed_total", target="kubernetes") - before["kubernetes"] == 35
    assert metric("pipeline_router_routed_total", target="celery") - before["celery"] == 25
    assert metric("pipeline_router_dead_lettered_total", reason="schema") - letters_before == 1


async def test_a_restarted_router_resumes_after_its_last_commit(router_env: Settings) -> None:
    s = router_env
    first = [request(TaskKey("resume", f"a{i}", "r"), "kubernetes") for i in range(30)]
    second = [request(TaskKey("resume", f"b{i}", "r"), "kubernetes") for i in range(20)]
    await publish(s, first)
    async with router_running(s):
        await read_records(s, s.topic.kubernetes, 30)
    await publish(s, second)
    async with router_running(s):
        await read_records(s, s.topic.kubernetes, 50)
    routed = await read_all(s, s.topic.kubernetes)
    assert sorted(r.key for r in routed) == sorted(k for k, _ in first + second)


async def test_tries_and_updates_of_one_task_keep_their_order(
    router_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_ROUTER_BATCH_SIZE", "7")  # many batches, many acks
    s = load_settings()
    records = []
    for n in range(40):
        records.append(request(TaskKey("order", "one", "r", -1, n // 4 + 1), "default",
                               labels={"seq": str(n)}))  # fmt: skip
        records.append(request(TaskKey("order", f"other{n}", "r"), "kubernetes"))
    await publish(s, records)
    async with router_running(s):
        await read_records(s, s.topic.celery, 40)
    routed = [r for r in await read_all(s, s.topic.celery)]
    assert len({r.partition for r in routed}) == 1
    seqs = [int(messages.decode_request(r.value)["labels"]["seq"]) for r in routed]
    assert seqs == list(range(40))
    tries = [messages.decode_request(r.value)["key"]["try_number"] for r in routed]
    assert tries == sorted(tries)


async def test_the_lag_gauge_shows_the_owned_partitions_and_only_those(
    router_env: Settings,
) -> None:
    s = router_env
    gone = TopicPartition("tasks.gone", 0)  # as if owned before a rebalance
    LAG.labels(gone.topic, str(gone.partition)).set(9)
    router = Router(s)
    router._lag_shown = {gone}
    ours = {s.topic.requests, s.topic.control, gone.topic}  # not earlier tests' routers

    def shown() -> dict[tuple[str, str], float]:
        [metric] = LAG.collect()
        return {
            (x.labels["topic"], x.labels["partition"]): x.value
            for x in metric.samples
            if x.labels["topic"] in ours
        }

    async def caught_up() -> bool:
        assert router._consumer is not None
        owned = {(tp.topic, str(tp.partition)) for tp in router._consumer.assignment()}
        return set(shown()) == owned and not any(shown().values())

    await publish(s, [request(TaskKey("lag", f"t{i}", "r"), "gpu") for i in range(12)])
    async with runtime.running(router, stop_timeout_s=30):
        await read_records(s, s.topic.kubernetes, 12)
        await eventually(caught_up)  # the gauge is set after the batch's acks
    assert (gone.topic, str(gone.partition)) not in shown()


# -- three processes, one SIGKILLed -----------------------------------------------------------


class RouterProcess:
    """`pipeline run router` as a subprocess, with its own metrics port and log file."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(os.environ, PIPELINE_RUNTIME_HTTP_PORT=str(self.port))
        with self.log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pipeline", "run", "router", env=env,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    async def routed(self) -> float:
        """Requests this process routed so far (0 until its metrics endpoint answers)."""
        try:
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{self.port}/metrics"
                async with http.get(url) as response:
                    text = await response.text()
        except aiohttp.ClientError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("pipeline_router_routed_total{")
        )

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), 30)


async def test_three_routers_in_one_group_survive_a_sigkill(
    router_env: Settings, tmp_path: Path
) -> None:
    s = router_env
    routers = [RouterProcess(tmp_path / f"router-{i}.log") for i in range(3)]
    for router in routers:
        await router.start()
    keys = [TaskKey("scale", f"t{i}", "r") for i in range(600)]
    bad = [(f"bad-{i}".encode(), b"{broken " + str(i).encode()) for i in range(30)]
    chunks = [keys[i : i + 50] for i in range(0, len(keys), 50)]
    victim = routers[0]

    async def victim_routed() -> bool:
        return await victim.routed() > 0

    try:
        for n, chunk in enumerate(chunks):
            await publish(s, [request(k, "kubernetes" if i % 2 else "default")
                              for i, k in enumerate(chunk)] + bad[n * 2 : n * 2 + 2])  # fmt: skip
            if n == 2:  # mid-stream: the victim has routed something, more is still coming
                await eventually(victim_routed, timeout_s=60)
                victim.signal(signal.SIGKILL)
                assert await victim.wait() == -signal.SIGKILL
        await publish(s, bad[24:])

        async def delivered() -> bool:
            kube, celery = await read_all(s, s.topic.kubernetes), await read_all(s, s.topic.celery)
            dlq = await read_all(s, s.topic.dlq)
            return len({r.key for r in kube + celery}) == len(keys) and len(
                {r.key for r in dlq}
            ) == len(bad)

        await eventually(delivered, timeout_s=90, interval_s=1.0)
    finally:
        for router in routers[1:]:
            if router.process and router.process.returncode is None:
                router.signal(signal.SIGTERM)
    assert [await r.wait() for r in routers[1:]] == [0, 0]
    kube = await read_all(s, s.topic.kubernetes)
    assert {r.key for r in kube} == {k.partition_key for i, k in _numbered(chunks) if i % 2}
    letters = [orjson.loads(r.value) for r in await read_all(s, s.topic.dlq)]
    assert {x["error"]["code"] for x in letters} == {"not_json"}


def _numbered(chunks: list[list[TaskKey]]) -> Iterator[tuple[int, TaskKey]]:
    for chunk in chunks:
        yield from enumerate(chunk)
