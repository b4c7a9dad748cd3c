"""What the emulator answers, checked against the published Kubernetes shapes it ships.

Discovery documents, Status errors, pods, lists and watch events are validated against the
published definitions (`pipeline/sandbox/kube/openapi/definitions.json`); Tables and the
aggregated discovery form, which the published spec does not describe, against the required
fields of their Go types (meta/v1 Table, apidiscovery/v2).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest

from pipeline.sandbox.kube import KubeEmulator
from pipeline.sandbox.kube.openapi import definitions
from tests.fixtures.kube import pod_manifest

pytestmark = pytest.mark.integration

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
PODS = "/api/v1/namespaces/default/pods"


def conforms(document: Any, definition: str) -> None:
    """Validate against a published definition; nulls count as absent, as Go decodes them."""
    # the published IntOrString says string with a format JSON Schema does not know
    either = {"io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": ["integer", "string"]}}
    schema = {"$ref": f"#/definitions/{definition}", "definitions": definitions() | either}
    jsonschema.Draft4Validator(schema).validate(_without_nulls(document))


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def requires(document: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if n not in document]
    assert not missing, f"missing {missing} in {document}"


async def fetch(
    emulator: KubeEmulator, path: str, accept: str = "application/json", method: str = "GET"
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, emulator.url + path, headers={"Accept": accept}) as response,
    ):
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize(
    ("path", "definition"),
    [
        ("/version", "io.k8s.apimachinery.pkg.version.Info"),
        ("/api", META + "APIVersions"),
        ("/apis", META + "APIGroupList"),
        ("/api/v1", META + "APIResourceList"),
    ],
)
async def test_discovery_documents_conform(
    kube_emulator: KubeEmulator, path: str, definition: str
) -> None:
    status, body = await fetch(kube_emulator, path)
    assert status == 200
    conforms(body, definition)


@pytest.mark.parametrize(
    ("path", "definition"),
    [
        ("/api/v1/nodes", "io.k8s.api.core.v1.NodeList"),
        ("/api/v1/namespaces", "io.k8s.api.core.v1.NamespaceList"),
        ("/api/v1/services", "io.k8s.api.core.v1.ServiceList"),
    ],
)
async def test_cluster_resources_conform(
    kube_emulator: KubeEmulator, path: str, definition: str
) -> None:
    status, body = await fetch(kube_emulator, path)
    assert status == 200 and body["items"]
    conforms(body, definition)


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [("GET", PODS + "/missing", 404), ("GET", "/api/v1/nothing-here", 404)],
)
async def test_errors_are_status_objects(
    kube_emulator: KubeEmulator, method: str, path: str, code: int
) -> None:
    status, body = await fetch(kube_emulator, path, method=method)
    assert status == code == body["code"]
    conforms(body, META + "Status")


async def test_invalid_pod_is_a_status_with_causes(kube_emulator: KubeEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"metadata": {"name": "Bad_Name"}, "spec": {"containers": []}}
        async with session.post(kube_emulator.url + PODS, json=body) as response:
            status = await response.json()
    assert response.status == 422
    conforms(status, META + "Status")
    assert status["details"]["causes"]


async def test_pods_lists_and_watch_events_conform(kube_emulator: KubeEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(kube_emulator.url + PODS, json=pod_manifest("shape")) as created:
            conforms(await created.json(), "io.k8s.api.core.v1.Pod")
        params = {"watch": "true", "timeoutSeconds": "1"}
        async with session.get(kube_emulator.url + PODS, params=params) as watch:
            events = [line async for line in watch.content if line.strip()]
    for line in events:
        conforms(orjson.loads(line), META + "WatchEvent")
    _, pods = await fetch(kube_emulator, PODS)
    conforms(pods, "io.k8s.api.core.v1.PodList")
    assert [p["metadata"]["name"] for p in pods["items"]] == ["shape"]


async def test_tables_carry_the_fields_meta_v1_requires(kube_emulator: KubeEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        await session.post(kube_emulator.url + PODS, json=pod_manifest("tabled"))
    for path in (PODS, PODS + "/tabled"):
        status, table = await fetch(kube_emulator, path, TABLE_ACCEPT)
        assert status == 200
        assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
        requires(table, "columnDefinitions", "rows")
        for column in table["columnDefinitions"]:
            requires(column, "name", "type", "format", "description", "priority")
        [row] = table["rows"]
        requires(row, "cells", "object")
        assert len(row["cells"]) == len(table["columnDefinitions"])
        conforms(row["object"]["metadata"], META + "ObjectMeta")


async def test_aggregated_discovery_carries_the_fields_apidiscovery_v2_requires(
    kube_emulator: KubeEmulator,
) -> None:
    for path in ("/api", "/apis"):
        _, body = await fetch(kube_emulator, path, AGGREGATED)
        requires(body, "kind", "apiVersion", "metadata", "items")
        for group in body["items"]:
            for version in group["versions"]:
                requires(version, "version", "resources", "freshness")
                for resource in version["resources"]:
                    requires(resource, "resource", "responseKind", "scope", "verbs")
                    requires(resource, "singularResource")
                    for sub in resource.get("subresources", []):
                        requires(sub, "subresource", "responseKind", "verbs")


async def test_openapi_v3_names_every_served_patch_with_field_validation(
    kube_emulator: KubeEmulator,
) -> None:
    _, root = await fetch(kube_emulator, "/openapi/v3")
    url = root["paths"]["api/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/api/v1?hash=")
    _, document = await fetch(kube_emulator, url)
    assert document["openapi"].startswith("3.")
    schemas = document["components"]["schemas"]
    patches = [item["patch"] for item in document["paths"].values() if "patch" in item]
    patched = {patch["x-kubernetes-group-version-kind"]["kind"] for patch in patches}
    assert patched == {"Pod", "Namespace"}  # what kubectl validates on the server by
    for patch in patches:
        assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    refs = _refs(document)
    assert refs and all(ref.rsplit("/", 1)[-1] in schemas for ref in refs)


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if "$ref" in node else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


async def test_event_lists_conform(kube_emulator: KubeEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        await session.post(kube_emulator.url + PODS, json=pod_manifest("eventful"))
    _, events = await fetch(kube_emulator, "/api/v1/namespaces/default/events")
    conforms(events, "io.k8s.api.core.v1.EventList")
    assert any(e["reason"] == "Scheduled" for e in events["items"])
    _, everywhere = await fetch(kube_emulator, "/api/v1/events", TABLE_ACCEPT)
    assert everywhere["kind"] == "Table" and everywhere["rows"]
