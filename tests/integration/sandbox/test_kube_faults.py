"""Every injectable fault, observed the way a client of a misbehaving cluster observes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from pipeline.sandbox.kube import FaultConfig, KubeEmulator
from tests.fixtures.kube import core_v1_for, phase_reached, pod_manifest, watch_until

pytestmark = pytest.mark.integration
NS = "default"
LONG = {"sandbox.pipeline.dev/run-seconds": "60"}


@pytest.fixture
async def admin(kube_emulator: KubeEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=kube_emulator.url) as session:
        yield session


async def rejected(call: Any, *args: Any, **kwargs: Any) -> ApiException:
    with pytest.raises(ApiException) as raised:
        await asyncio.to_thread(call, *args, **kwargs)
    return raised.value


async def create(api: client.CoreV1Api, body: dict[str, Any]) -> client.V1Pod:
    return await asyncio.to_thread(api.create_namespaced_pod, NS, body)


def waiting_reason(reason: str) -> Any:
    def seen(events: list[dict[str, Any]]) -> bool:
        statuses = events[-1]["object"]["status"].get("containerStatuses") or [{}]
        return statuses[0].get("state", {}).get("waiting", {}).get("reason") == reason

    return seen


async def test_latency_delays_answers_past_a_client_timeout(
    kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    kube_emulator.faults.update(latency_seconds=5.0)
    with pytest.raises(urllib3.exceptions.HTTPError):
        await asyncio.to_thread(
            core_v1.list_namespaced_pod, NS, _request_timeout=0.2, _preload_content=True
        )


@pytest.mark.parametrize(("verb", "code"), [("create", 503), ("list", 500), ("watch", 503)])
async def test_error_rates_per_verb(
    kube_emulator: KubeEmulator, core_v1: client.CoreV1Api, verb: str, code: int
) -> None:
    kube_emulator.faults.fail(verb, code=code, retry_after=0)
    if verb == "create":
        error = await rejected(core_v1.create_namespaced_pod, NS, pod_manifest("x"))
    elif verb == "list":
        error = await rejected(core_v1.list_namespaced_pod, NS)
    else:
        with pytest.raises(ApiException) as raised:
            await watch_until(core_v1, lambda e: True, timeout_seconds=1)
        error = raised.value
    assert error.status == code


async def test_throttling_answers_429_with_retry_after_then_recovers(
    kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    kube_emulator.faults.fail("create", code=429, count=2)
    errors = [await rejected(core_v1.create_namespaced_pod, NS, pod_manifest("t")) for _ in "ab"]
    created = await create(core_v1, pod_manifest("t"))
    assert [(e.status, e.headers["Retry-After"]) for e in errors] == [(429, "1"), (429, "1")]
    assert '"reason":"TooManyRequests"' in errors[0].body
    assert created.metadata.name == "t"


async def test_stuck_images_stay_pending_while_others_run(
    kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    kube_emulator.faults.update(stuck_pending_images="registry.local/stuck:*")
    stuck = await create(core_v1, pod_manifest("stuck", image="registry.local/stuck:1"))
    await create(core_v1, pod_manifest("fine"))
    await watch_until(
        core_v1,
        phase_reached("fine", "Succeeded"),
        resource_version=stuck.metadata.resource_version,
    )
    pod = await asyncio.to_thread(core_v1.read_namespaced_pod, "stuck", NS)
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "ContainerCreating"


async def test_image_pull_backoff(kube_emulator: KubeEmulator, core_v1: client.CoreV1Api) -> None:
    kube_emulator.faults.update(image_pull_backoff_images="*/missing:*")
    created = await create(core_v1, pod_manifest("pull", image="example.com/missing:1"))
    events = await watch_until(
        core_v1,
        waiting_reason("ImagePullBackOff"),
        resource_version=created.metadata.resource_version,
    )
    reasons = [
        (e["object"]["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("waiting")
        for e in events
    ]
    assert {
        "reason": "ErrImagePull",
        "message": 'Back-off pulling image "example.com/missing:1"',
    } in reasons
    assert events[-1]["object"]["status"]["phase"] == "Pending"


async def test_oom_kill_by_image_pattern(
    kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    kube_emulator.faults.update(oom_kill_images="*/hungry*")
    created = await create(core_v1, pod_manifest("oom", image="x/hungry:1", annotations=LONG))
    events = await watch_until(
        core_v1, phase_reached("oom", "Failed"), resource_version=created.metadata.resource_version
    )
    terminated = events[-1]["object"]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")


async def test_eviction_through_the_admin_endpoint(
    core_v1: client.CoreV1Api, admin: aiohttp.ClientSession
) -> None:
    created = await create(core_v1, pod_manifest("evicted", annotations=LONG))
    rv = created.metadata.resource_version
    await watch_until(core_v1, phase_reached("evicted", "Running"), resource_version=rv)
    async with admin.post(f"/_sandbox/namespaces/{NS}/pods/evicted/evict") as response:
        assert response.status == 200
    events = await watch_until(core_v1, phase_reached("evicted", "Failed"), resource_version=rv)
    status = events[-1]["object"]["status"]
    assert status["reason"] == "Evicted"
    assert {"type": "DisruptionTarget", "status": "True"}.items() <= status["conditions"][
        -1
    ].items()


async def test_oom_kill_in_process(kube_emulator: KubeEmulator, core_v1: client.CoreV1Api) -> None:
    created = await create(core_v1, pod_manifest("killed", annotations=LONG))
    rv = created.metadata.resource_version
    await watch_until(core_v1, phase_reached("killed", "Running"), resource_version=rv)
    kube_emulator.oom_kill(NS, "killed")
    events = await watch_until(core_v1, phase_reached("killed", "Failed"), resource_version=rv)
    terminated = events[-1]["object"]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled"


async def test_watch_streams_drop_after_n_events(
    kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    for name in "abcd":
        await create(core_v1, pod_manifest(name))
    kube_emulator.faults.update(watch_drop_after_events=2)
    events = await watch_until(core_v1, lambda e: False, timeout_seconds=30)
    assert len(events) == 2


async def test_forced_410_on_the_next_watch_only(
    kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    created = await create(core_v1, pod_manifest("a"))
    rv = created.metadata.resource_version
    kube_emulator.faults.expire_next_watch()
    with pytest.raises(ApiException) as raised:
        await watch_until(core_v1, lambda e: True, resource_version=rv)
    events = await watch_until(core_v1, lambda e: True, resource_version=rv)
    assert raised.value.status == 410
    assert events


async def test_admin_endpoint_sets_merges_and_resets_faults(
    core_v1: client.CoreV1Api, admin: aiohttp.ClientSession
) -> None:
    put = {"errors": {"create": {"code": 500}}, "latency_seconds": 0.01}
    async with admin.put("/_sandbox/faults", json=put) as response:
        assert response.status == 200
    async with admin.patch("/_sandbox/faults", json={"expire_next_watches": 1}) as response:
        merged = await response.json()
    failed = await rejected(core_v1.create_namespaced_pod, NS, pod_manifest("x"))
    async with admin.delete("/_sandbox/faults") as response:
        assert (await response.json()) == FaultConfig().to_json()
    created = await create(core_v1, pod_manifest("x"))
    assert merged["errors"]["create"]["code"] == 500 and merged["expire_next_watches"] == 1
    assert failed.status == 500
    assert created.metadata.name == "x"


async def test_admin_endpoint_rejects_unknown_fault_fields(admin: aiohttp.ClientSession) -> None:
    async with admin.put("/_sandbox/faults", json={"nonsense": 1}) as response:
        body = await response.json()
    assert (response.status, body["reason"]) == (400, "BadRequest")


async def test_faults_set_at_start_apply_from_the_first_request() -> None:
    config = FaultConfig.from_json({"errors": {"list": {"code": 503, "retry_after": 0}}})
    async with KubeEmulator(mode="off", faults=config) as emulator:
        error = await rejected(core_v1_for(emulator).list_namespaced_pod, NS)
    assert (error.status, error.headers["Retry-After"]) == (503, "0")
