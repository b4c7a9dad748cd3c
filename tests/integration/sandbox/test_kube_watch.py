"""Watch conformance through `kubernetes.watch.Watch`: resume, 410, selectors, bookmarks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from pipeline.sandbox.kube import KubeEmulator
from tests.fixtures.kube import core_v1_for, pod_manifest, watch_until

pytestmark = pytest.mark.integration
NS = "default"
QUIET = {"sandbox.pipeline.dev/pending-seconds": "60"}  # stays Pending: no kubelet events


def names_and_types(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events]


def count(n: int) -> Any:
    return lambda events: len(events) >= n


async def create(api: client.CoreV1Api, name: str, **kwargs: Any) -> client.V1Pod:
    body = pod_manifest(name, **kwargs)
    return await asyncio.to_thread(api.create_namespaced_pod, NS, body)


async def test_resume_from_list_rv_sees_exactly_the_later_events() -> None:
    async with KubeEmulator(mode="off") as emulator:
        api = core_v1_for(emulator)
        await create(api, "before")
        listed = await asyncio.to_thread(api.list_namespaced_pod, NS)
        await create(api, "after-1")
        await asyncio.to_thread(api.delete_namespaced_pod, "before", NS)
        await create(api, "after-2")
        events = await watch_until(api, count(3), resource_version=listed.metadata.resource_version)
    assert names_and_types(events) == [
        ("ADDED", "after-1"),
        ("DELETED", "before"),
        ("ADDED", "after-2"),
    ]


async def test_watch_without_resource_version_starts_with_synthetic_added() -> None:
    async with KubeEmulator(mode="off") as emulator:
        api = core_v1_for(emulator)
        await create(api, "a")
        await create(api, "b")
        events = await watch_until(api, count(2))
    assert names_and_types(events) == [("ADDED", "a"), ("ADDED", "b")]


async def test_watch_from_a_compacted_rv_raises_410() -> None:
    async with KubeEmulator(mode="off", history_size=2) as emulator:
        api = core_v1_for(emulator)
        first = await create(api, "a")
        for name in ("b", "c", "d"):
            await create(api, name)
        with pytest.raises(ApiException) as raised:
            await watch_until(api, count(1), resource_version=first.metadata.resource_version)
    assert raised.value.status == 410
    assert "too old resource version" in raised.value.reason


async def test_selectors_filter_list_and_watch_alike(core_v1: client.CoreV1Api) -> None:
    start = await asyncio.to_thread(core_v1.list_namespaced_pod, NS)
    await create(core_v1, "web", labels={"app": "web"}, annotations=QUIET)
    await create(core_v1, "db", labels={"app": "db"}, annotations=QUIET)
    listed = await asyncio.to_thread(core_v1.list_namespaced_pod, NS, label_selector="app=web")
    relabel = {"metadata": {"labels": {"app": "cache"}}}
    await asyncio.to_thread(core_v1.patch_namespaced_pod, "web", NS, relabel)
    events = await watch_until(
        core_v1,
        lambda e: e[-1]["type"] == "DELETED",
        label_selector="app=web",
        resource_version=start.metadata.resource_version,
    )
    assert [p.metadata.name for p in listed.items] == ["web"]
    assert {name for _, name in names_and_types(events)} == {"web"}
    assert events[0]["type"] == "ADDED"
    assert events[-1]["object"]["metadata"]["labels"] == {"app": "cache"}


async def test_field_selector_on_phase_filters_the_watch(core_v1: client.CoreV1Api) -> None:
    start = await asyncio.to_thread(core_v1.list_namespaced_pod, NS)
    await create(core_v1, "quiet", annotations=QUIET)
    await create(core_v1, "done")
    events = await watch_until(
        core_v1,
        count(1),
        field_selector="status.phase=Succeeded",
        resource_version=start.metadata.resource_version,
    )
    assert names_and_types(events) == [("ADDED", "done")]
    assert events[0]["object"]["status"]["phase"] == "Succeeded"


async def test_bookmarks_carry_the_resource_version_and_timeout_ends_the_stream() -> None:
    async with KubeEmulator(mode="off", bookmark_interval=0.2) as emulator:
        api = core_v1_for(emulator)
        created = await create(api, "a")
        stream = watch.Watch()
        events = await asyncio.to_thread(
            list,
            stream.stream(
                api.list_namespaced_pod,
                NS,
                resource_version=created.metadata.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=1,
            ),
        )
    assert events, "a watch with bookmarks allowed sends at least the final bookmark"
    assert {e["type"] for e in events} == {"BOOKMARK"}
    assert (
        events[-1]["raw_object"]["metadata"]["resourceVersion"] == created.metadata.resource_version
    )
    assert stream.resource_version == created.metadata.resource_version


async def test_watch_sees_each_kubelet_step_as_modified(core_v1: client.CoreV1Api) -> None:
    created = await create(core_v1, "steps")
    events = await watch_until(
        core_v1,
        lambda e: e[-1]["object"]["status"]["phase"] == "Succeeded",
        resource_version=created.metadata.resource_version,
    )
    assert {e["type"] for e in events} == {"MODIFIED"}
    phases = [e["object"]["status"]["phase"] for e in events]
    assert phases[-1] == "Succeeded" and "Running" in phases
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


async def test_a_watch_whose_end_falls_on_a_bookmark_sends_it_once() -> None:
    async with KubeEmulator(mode="off", bookmark_interval=1.0) as emulator:
        api = core_v1_for(emulator)
        created = await create(api, "a")
        events = await asyncio.to_thread(
            list,
            watch.Watch().stream(
                api.list_namespaced_pod,
                NS,
                resource_version=created.metadata.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=1,
            ),
        )
    assert [e["type"] for e in events] == ["BOOKMARK"]
