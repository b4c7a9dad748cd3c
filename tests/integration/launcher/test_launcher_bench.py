"""`pipeline bench launcher --replicas`: launcher processes in one group share the requests."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client

from pipeline.bench.launcher import WARMUP, replica_creates
from tests.integration.launcher.support import SetEnv

pytestmark = pytest.mark.integration


async def test_two_replicas_split_the_requests_and_create_each_pod_once(
    launcher_env: SetEnv, core_v1: client.CoreV1Api
) -> None:
    settings = launcher_env(parallelism=1_000_000)
    drained = await replica_creates(settings, "split", n=40, replicas=2)

    assert sum(drained.created) == 40 and min(drained.created) > 0
    assert drained.per_s > 0
    # off the loop: the emulator serves on it
    listed = await asyncio.to_thread(core_v1.list_pod_for_all_namespaces)
    names = {
        pod.metadata.name for pod in listed.items if pod.metadata.namespace.startswith("bench-")
    }
    assert len(names) == 40 + 2 * WARMUP  # each replica's warm-up pods, then one per request
