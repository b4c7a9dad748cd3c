"""Discovery through the clients that depend on it: client-go's forms and the DynamicClient."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from kubernetes import client, dynamic

from pipeline.sandbox.kube import KubeEmulator
from tests.fixtures.kube import client_configuration, pod_manifest

pytestmark = pytest.mark.integration

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
KUBECTL_ACCEPT = f"{AGGREGATED},{V2BETA1},application/json"


async def get_json(emulator: KubeEmulator, path: str, accept: str) -> tuple[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(emulator.url + path, headers={"Accept": accept}) as response,
    ):
        assert response.status == 200
        return response.headers["Content-Type"], await response.json(content_type=None)


async def test_aggregated_discovery_lists_pods_with_subresources(
    kube_emulator: KubeEmulator,
) -> None:
    content_type, body = await get_json(kube_emulator, "/api", KUBECTL_ACCEPT)
    assert content_type == AGGREGATED
    assert (body["kind"], body["apiVersion"]) == ("APIGroupDiscoveryList", "apidiscovery.k8s.io/v2")
    [core] = body["items"]
    [v1] = core["versions"]
    pods = next(r for r in v1["resources"] if r["resource"] == "pods")
    assert pods["scope"] == "Namespaced" and pods["shortNames"] == ["po"]
    assert {s["subresource"] for s in pods["subresources"]} >= {"log", "status"}
    content_type, groups = await get_json(kube_emulator, "/apis", KUBECTL_ACCEPT)
    assert content_type == AGGREGATED and groups["kind"] == "APIGroupDiscoveryList"


async def test_legacy_discovery_when_the_client_asks_for_plain_json(
    kube_emulator: KubeEmulator,
) -> None:
    _, versions = await get_json(kube_emulator, "/api", "application/json")
    assert versions["kind"] == "APIVersions" and versions["versions"] == ["v1"]
    _, resources = await get_json(kube_emulator, "/api/v1", "application/json")
    names = {r["name"] for r in resources["resources"]}
    assert {"pods", "pods/log", "pods/status"} <= names
    _, groups = await get_json(kube_emulator, "/apis", "application/json")
    assert groups["kind"] == "APIGroupList"


async def test_dynamic_client_finds_and_lists_pods(kube_emulator: KubeEmulator) -> None:
    """Airflow's KubernetesExecutor adopts pods through this client before anything else."""
    api_client = client.ApiClient(client_configuration(kube_emulator))
    await asyncio.to_thread(
        client.CoreV1Api(api_client).create_namespaced_pod, "default", pod_manifest("dyn")
    )

    def list_through_dynamic() -> list[str]:
        pods = dynamic.DynamicClient(api_client).resources.get(api_version="v1", kind="Pod")
        return [p.metadata.name for p in pods.get(namespace="default").items]

    try:
        assert await asyncio.to_thread(list_through_dynamic) == ["dyn"]
    finally:
        api_client.close()


@pytest.mark.parametrize("spelling", ["True", "true", "1", "t"])
async def test_watch_spelled_any_way_go_accepts_is_a_watch(
    kube_emulator: KubeEmulator, spelling: str
) -> None:
    """kubernetes 36 sends `watch=True`; a real server streams, so must the emulator."""
    url = f"{kube_emulator.url}/api/v1/namespaces/default/pods"
    async with aiohttp.ClientSession() as session:
        await session.post(url, json=pod_manifest("w"))
        params = {"watch": spelling, "timeoutSeconds": "1"}
        async with session.get(url, params=params) as response:
            first = await response.content.readline()
    assert first.startswith(b'{"type":"ADDED"')
