"""API discovery as kube-apiserver serves it: `/api`, `/api/v1`, `/apis`, `/apis/G/V`, `/version`.

Clients learn what a server has before they ask for it: kubectl and client-go's
`DynamicClient` first GET `/api` and `/apis` with an Accept header preferring the aggregated
form (`APIGroupDiscoveryList`, apidiscovery.k8s.io/v2, one response listing every resource),
and fall back to the legacy documents (`APIVersions`, `APIGroupList`, `APIResourceList`).
Both forms are built from one table of what the emulator serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from .status import JsonObj

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
SERVER_VERSION: JsonObj = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class Subresource:
    name: str
    verbs: tuple[str, ...]


@dataclass(frozen=True)
class Resource:
    """One served resource of one group/version, as discovery describes it."""

    group: str  # "" is the core group (served under /api)
    version: str
    name: str  # plural, the URL segment
    singular: str
    kind: str
    verbs: tuple[str, ...] = ALL_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = field(default_factory=tuple)
    namespaced: bool = True
    documented: bool = True  # the emulator ships its OpenAPI schema (`kubectl explain`)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


POD_RESOURCE = Resource(
    "",
    "v1",
    "pods",
    "pod",
    "Pod",
    short_names=("po",),
    categories=("all",),
    subresources=(
        Subresource("attach", ("create", "get")),
        Subresource("exec", ("create", "get")),
        Subresource("log", ("get",)),
        Subresource("status", ("get", "patch", "update")),
    ),
)

EVENT_RESOURCE = Resource(
    "", "v1", "events", "event", "Event", ("create", "delete", "get", "list", "watch"), ("ev",)
)

NODE_RESOURCE = Resource(
    "", "v1", "nodes", "node", "Node", ("get", "list", "watch"), ("no",), namespaced=False,
)  # fmt: skip

SERVICE_RESOURCE = Resource(
    "", "v1", "services", "service", "Service", ("get", "list", "watch"), ("svc",),
    categories=("all",),
)  # fmt: skip

NAMESPACE_RESOURCE = Resource(
    "", "v1", "namespaces", "namespace", "Namespace",
    ("create", "delete", "get", "list", "patch", "update", "watch"), ("ns",), namespaced=False,
)  # fmt: skip


def discovery_routes(resources: Sequence[Resource]) -> list[web.RouteDef]:
    """Routes answering every discovery document for `resources`."""
    core = [r for r in resources if not r.group]
    groups = sorted({r.group for r in resources if r.group})

    async def legacy_versions(request: web.Request) -> web.Response:
        if version := _aggregated_version(request):
            return _aggregated(version, [_group_discovery("", core)])
        return _json(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
                ],
            }
        )

    async def group_list(request: web.Request) -> web.Response:
        by_group = {g: [r for r in resources if r.group == g] for g in groups}
        if version := _aggregated_version(request):
            items = [_group_discovery(g, rs) for g, rs in by_group.items()]
            return _aggregated(version, items)
        return _json(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [_api_group(g, rs) for g, rs in by_group.items()],
            }
        )

    routes = [
        web.get("/api", legacy_versions),
        web.get("/apis", group_list),
        web.get("/version", _version),
    ]
    for group_version in sorted({r.group_version for r in resources}):
        served = [r for r in resources if r.group_version == group_version]
        prefix = "/api/" if not served[0].group else "/apis/"
        routes.append(web.get(prefix + group_version, _resource_list(group_version, served)))
    for group in groups:
        routes.append(
            web.get(f"/apis/{group}", _group(group, [r for r in resources if r.group == group]))
        )
    return routes


def resource_list(group_version: str, resources: Sequence[Resource]) -> JsonObj:
    """The legacy `APIResourceList` for one group/version (subresources as `pods/log`)."""
    entries: list[JsonObj] = []
    for r in resources:
        entry: JsonObj = {
            "name": r.name,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
            **_names(r),
        }
        entries.append(entry)
        for sub in r.subresources:
            entries.append(
                {
                    "name": f"{r.name}/{sub.name}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": list(sub.verbs),
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }


def _resource_list(group_version: str, resources: Sequence[Resource]) -> Handler:
    body = resource_list(group_version, resources)

    async def handler(_: web.Request) -> web.Response:
        return _json(body)

    return handler


def _group(group: str, resources: Sequence[Resource]) -> Handler:
    body = {"kind": "APIGroup", "apiVersion": "v1", **_api_group(group, resources)}

    async def handler(_: web.Request) -> web.Response:
        return _json(body)

    return handler


async def _version(_: web.Request) -> web.Response:
    return _json(SERVER_VERSION)


def _api_group(group: str, resources: Sequence[Resource]) -> JsonObj:
    versions = [
        {"groupVersion": f"{group}/{v}", "version": v}
        for v in sorted({r.version for r in resources})
    ]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def _group_discovery(group: str, resources: Sequence[Resource]) -> JsonObj:
    """One `APIGroupDiscovery` item: the group's versions with their resources inline."""
    metadata: JsonObj = {"creationTimestamp": None}
    if group:
        metadata["name"] = group
    versions = []
    for version in sorted({r.version for r in resources}):
        served = [_resource_discovery(r) for r in resources if r.version == version]
        versions.append({"version": version, "resources": served, "freshness": "Current"})
    return {"metadata": metadata, "versions": versions}


def _resource_discovery(r: Resource) -> JsonObj:
    kind = {"group": r.group, "version": r.version, "kind": r.kind}
    entry: JsonObj = {
        "resource": r.name,
        "responseKind": kind,
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(r.verbs),
        **_names(r),
    }
    if r.subresources:
        entry["subresources"] = [
            {"subresource": s.name, "responseKind": kind, "verbs": list(s.verbs)}
            for s in r.subresources
        ]
    return entry


def _names(r: Resource) -> JsonObj:
    """shortNames and categories, present only when the resource has some."""
    names: JsonObj = {}
    if r.short_names:
        names["shortNames"] = list(r.short_names)
    if r.categories:
        names["categories"] = list(r.categories)
    return names


def _aggregated_version(request: web.Request) -> str | None:
    """v2 or v2beta1 when the Accept header asks for the aggregated form, else None."""
    for media in request.headers.get("Accept", "").split(","):
        params = dict(p.strip().split("=", 1) for p in media.split(";")[1:] if "=" in p)
        if (
            params.get("g") == "apidiscovery.k8s.io"
            and params.get("as") == "APIGroupDiscoveryList"
            and params.get("v") in ("v2", "v2beta1")
        ):
            return params["v"]
    return None


def _aggregated(version: str, items: list[JsonObj]) -> web.Response:
    body = {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }
    return _json(body, AGGREGATED.format(version=version))


def _json(body: JsonObj, content_type: str = "application/json") -> web.Response:
    headers = {"Content-Type": content_type, "Vary": "Accept"}
    return web.Response(body=orjson.dumps(body), headers=headers)
