"""Conformance of the emulator's pods API through the official client over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from pipeline.sandbox.kube import KubeEmulator
from tests.fixtures.kube import core_v1_for, pod_manifest, watch_until

pytestmark = pytest.mark.integration
NS = "default"


async def create(api: client.CoreV1Api, body: dict[str, Any], ns: str = NS) -> client.V1Pod:
    return await asyncio.to_thread(api.create_namespaced_pod, ns, body)


async def rejected(call: Any, *args: Any, **kwargs: Any) -> ApiException:
    with pytest.raises(ApiException) as raised:
        await asyncio.to_thread(call, *args, **kwargs)
    return raised.value


async def test_create_fills_server_fields(core_v1: client.CoreV1Api) -> None:
    pod = await create(core_v1, pod_manifest("fill"))
    assert pod.metadata.namespace == NS
    assert pod.metadata.uid and pod.metadata.creation_timestamp
    assert int(pod.metadata.resource_version) > 0
    assert pod.status.phase == "Pending"
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.containers[0].image_pull_policy == "IfNotPresent"


async def test_generate_name_appends_a_random_suffix(core_v1: client.CoreV1Api) -> None:
    body = pod_manifest("")
    body["metadata"] = {"generateName": "task-"}
    first, second = await create(core_v1, body), await create(core_v1, body)
    assert first.metadata.name.startswith("task-") and len(first.metadata.name) == 10
    assert first.metadata.name != second.metadata.name


async def test_duplicate_name_is_409_already_exists(core_v1: client.CoreV1Api) -> None:
    await create(core_v1, pod_manifest("twice"))
    error = await rejected(core_v1.create_namespaced_pod, NS, pod_manifest("twice"))
    assert (error.status, error.reason) == (409, "Conflict")
    assert '"reason":"AlreadyExists"' in error.body


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metadata": {"name": "Not_DNS"}}, "metadata.name"),
        ({"metadata": {"name": "ok", "labels": {"bad key": "v"}}}, "metadata.labels"),
        ({"spec": {"containers": []}}, "spec.containers"),
        ({"spec": {"containers": [{"name": "base"}]}}, "spec.containers[0].image"),
    ],
)
async def test_invalid_pods_are_422_with_the_field(
    core_v1: client.CoreV1Api, change: dict[str, Any], field: str
) -> None:
    body = {**pod_manifest("ok"), **change}
    error = await rejected(core_v1.create_namespaced_pod, NS, body)
    assert error.status == 422
    assert f'"field":"{field}"' in error.body


async def test_malformed_body_is_400(kube_emulator: KubeEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{kube_emulator.url}/api/v1/namespaces/{NS}/pods"
        async with session.post(url, data=b"{not json") as response:
            status = await response.json()
        async with session.delete(f"{url}/any", data=b"{not json") as deleted:
            delete_status = await deleted.json()
    assert (response.status, status["reason"], status["kind"]) == (400, "BadRequest", "Status")
    assert (deleted.status, delete_status["reason"]) == (400, "BadRequest")


async def test_missing_pod_is_404(core_v1: client.CoreV1Api) -> None:
    error = await rejected(core_v1.read_namespaced_pod, "nope", NS)
    assert error.status == 404
    assert '"message":"pods \\"nope\\" not found"' in error.body


async def test_list_returns_its_resource_version_and_filters(core_v1: client.CoreV1Api) -> None:
    await create(core_v1, pod_manifest("web-1", labels={"app": "web"}))
    await create(core_v1, pod_manifest("db-1", labels={"app": "db"}))
    await asyncio.to_thread(core_v1.create_namespace, {"metadata": {"name": "other"}})
    last = await create(core_v1, pod_manifest("web-2", labels={"app": "web"}), ns="other")
    listed = await asyncio.to_thread(core_v1.list_namespaced_pod, NS, label_selector="app=web")
    assert [p.metadata.name for p in listed.items] == ["web-1"]
    assert int(listed.metadata.resource_version) >= int(last.metadata.resource_version)
    everywhere = await asyncio.to_thread(
        core_v1.list_pod_for_all_namespaces, field_selector="metadata.name=web-2"
    )
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere.items] == [
        ("other", "web-2")
    ]


async def test_list_pagination_with_limit_and_continue(core_v1: client.CoreV1Api) -> None:
    for i in range(5):
        await create(core_v1, pod_manifest(f"page-{i}"))
    first = await asyncio.to_thread(core_v1.list_namespaced_pod, NS, limit=2)
    await create(core_v1, pod_manifest("page-9"))
    names = [p.metadata.name for p in first.items]
    token = first.metadata._continue
    while token:
        page = await asyncio.to_thread(core_v1.list_namespaced_pod, NS, limit=2, _continue=token)
        names += [p.metadata.name for p in page.items]
        token = page.metadata._continue
    assert names == [f"page-{i}" for i in range(5)]


async def test_exact_resource_version_lists_the_past(core_v1: client.CoreV1Api) -> None:
    before = await create(core_v1, pod_manifest("early"))
    await create(core_v1, pod_manifest("late"))
    past = await asyncio.to_thread(
        core_v1.list_namespaced_pod,
        NS,
        resource_version=before.metadata.resource_version,
        resource_version_match="Exact",
    )
    assert [p.metadata.name for p in past.items] == ["early"]
    assert past.metadata.resource_version == before.metadata.resource_version


async def test_strategic_merge_patch_of_labels(core_v1: client.CoreV1Api) -> None:
    await create(core_v1, pod_manifest("patched", labels={"a": "1", "b": "2"}))
    body = {"metadata": {"labels": {"a": None, "c": "3"}}}
    pod = await asyncio.to_thread(core_v1.patch_namespaced_pod, "patched", NS, body)
    assert pod.metadata.labels == {"b": "2", "c": "3"}


async def test_merge_and_json_patch(core_v1: client.CoreV1Api) -> None:
    await create(core_v1, pod_manifest("patched", annotations={"x": "1"}))
    await asyncio.to_thread(
        core_v1.patch_namespaced_pod,
        "patched",
        NS,
        {"metadata": {"annotations": {"y": "2"}}},
        _content_type="application/merge-patch+json",
    )
    ops = [{"op": "remove", "path": "/metadata/annotations/x"}]
    pod = await asyncio.to_thread(core_v1.patch_namespaced_pod, "patched", NS, ops)
    assert pod.metadata.annotations == {"y": "2"}


async def test_an_apply_through_the_client_merges_into_the_pod(core_v1: client.CoreV1Api) -> None:
    await create(core_v1, pod_manifest("applied", labels={"app": "web"}))
    pod = await asyncio.to_thread(
        core_v1.patch_namespaced_pod,
        "applied",
        NS,
        {"metadata": {"name": "applied", "labels": {"a": "b"}}},
        field_manager="tests",
        _content_type="application/apply-patch+yaml",
    )
    assert pod.metadata.labels == {"app": "web", "a": "b"}


async def test_spec_changes_other_than_image_are_422(core_v1: client.CoreV1Api) -> None:
    await create(core_v1, pod_manifest("fixed"))
    body = {"spec": {"containers": [{"name": "base", "command": ["other"]}]}}
    error = await rejected(core_v1.patch_namespaced_pod, "fixed", NS, body)
    assert error.status == 422


async def test_replace_with_stale_resource_version_is_409_conflict(
    core_v1: client.CoreV1Api,
) -> None:
    annotations = {"sandbox.pipeline.dev/pending-seconds": "60"}
    created = await create(core_v1, pod_manifest("stale", annotations=annotations))
    await watch_until(core_v1, creating, resource_version=created.metadata.resource_version)
    pod = await asyncio.to_thread(core_v1.read_namespaced_pod, "stale", NS)
    pod.metadata.labels = {"first": "write"}
    await asyncio.to_thread(core_v1.replace_namespaced_pod, "stale", NS, pod)
    pod.metadata.labels = {"second": "write"}
    error = await rejected(core_v1.replace_namespaced_pod, "stale", NS, pod)
    assert error.status == 409
    assert '"reason":"Conflict"' in error.body


def creating(events: list[dict[str, Any]]) -> bool:
    statuses = events[-1]["object"]["status"].get("containerStatuses") or [{}]
    return statuses[0].get("state", {}).get("waiting", {}).get("reason") == "ContainerCreating"


async def test_status_subresource_changes_only_status(core_v1: client.CoreV1Api) -> None:
    await create(core_v1, pod_manifest("status"))
    body = {"metadata": {"labels": {"ignored": "yes"}}, "status": {"message": "hello"}}
    patched = await asyncio.to_thread(core_v1.patch_namespaced_pod_status, "status", NS, body)
    read = await asyncio.to_thread(core_v1.read_namespaced_pod_status, "status", NS)
    assert patched.status.message == read.status.message == "hello"
    assert not read.metadata.labels


async def test_delete_returns_the_object_and_removes_it(core_v1: client.CoreV1Api) -> None:
    await create(core_v1, pod_manifest("doomed"))
    deleted = await asyncio.to_thread(
        core_v1.delete_namespaced_pod, "doomed", NS, grace_period_seconds=0
    )
    assert deleted.metadata.name == "doomed"
    error = await rejected(core_v1.read_namespaced_pod, "doomed", NS)
    assert error.status == 404


async def test_graceful_delete_marks_then_removes_a_running_pod(core_v1: client.CoreV1Api) -> None:
    annotations = {"sandbox.pipeline.dev/run-seconds": "60"}
    created = await create(core_v1, pod_manifest("graceful", annotations=annotations))
    rv = created.metadata.resource_version
    await watch_until(
        core_v1, lambda e: e[-1]["object"]["status"]["phase"] == "Running", resource_version=rv
    )
    deleted = await asyncio.to_thread(core_v1.delete_namespaced_pod, "graceful", NS)
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 30
    events = await watch_until(
        core_v1,
        lambda e: e[-1]["type"] == "DELETED",
        resource_version=deleted.metadata.resource_version,
    )
    final = events[-1]["object"]
    assert final["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143


async def test_bearer_token_is_required_when_configured() -> None:
    async with KubeEmulator(token="s3cret") as emulator:
        api = core_v1_for(emulator)
        pods = await asyncio.to_thread(api.list_namespaced_pod, NS)
        anonymous = client.Configuration(host=emulator.url)
        anonymous_api = client.CoreV1Api(client.ApiClient(anonymous))
        error = await rejected(anonymous_api.list_namespaced_pod, NS)
    assert pods.items == []
    assert error.status == 401


async def test_stats_count_concurrent_creates(kube_emulator: KubeEmulator) -> None:
    kube_emulator.faults.update(latency_seconds=1.0)  # holds each create open while others start
    url = f"{kube_emulator.url}/api/v1/namespaces/{NS}/pods"
    async with aiohttp.ClientSession() as session:

        async def post(name: str) -> int:
            async with session.post(url, json=pod_manifest(name)) as response:
                return response.status

        statuses = await asyncio.gather(*(post(f"c{i}") for i in range(4)))
    assert statuses == [201] * 4
    assert kube_emulator.stats.max_creates_in_flight == 4
    assert kube_emulator.stats.requests["create"] == 4


@pytest.mark.parametrize(
    ("query", "body", "status", "message"),
    [
        ("", "metadata: {name: applied}", 422,
         'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value'),
        ("?fieldManager=me", "a: &x [1]\nb: [*x, *x]\n", 400, "YAML aliases are not accepted"),
        ("?fieldManager=me", "metadata: {name: other}", 400, "does not match the name"),
    ],
)  # fmt: skip
async def test_an_apply_is_refused_without_a_manager_with_aliases_or_another_name(
    kube_emulator: KubeEmulator, query: str, body: str, status: int, message: str
) -> None:
    url = f"{kube_emulator.url}/api/v1/namespaces/{NS}/pods/applied{query}"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    async with aiohttp.ClientSession() as http, http.patch(url, data=body, headers=headers) as r:
        answer = await r.json()
    assert r.status == status
    assert message in answer["message"]
