"""OpenAPI v3 for what the emulator serves, built from the published Kubernetes definitions.

`definitions.json` is a trimmed copy of the published v1.32 definitions (Swagger 2.0 form, see
`tools/trim_kube_openapi.py`); the documents here add the paths of the served operations,
with the `x-kubernetes-group-version-kind`/`x-kubernetes-action` extensions and the
`fieldValidation` parameter that kubectl looks for before it trusts the server to validate.
`kubectl explain` reads the schemas, `kubectl apply`/`create` validation reads the paths.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from ..discovery import Resource
from ..status import JsonObj

Schema = dict[str, Any]
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


@functools.cache
def definitions() -> dict[str, Schema]:
    """The published definitions the emulator ships, by name (Swagger 2.0 form)."""
    raw = resources.files(__package__).joinpath("definitions.json").read_bytes()
    loaded: dict[str, Schema] = orjson.loads(raw)
    return loaded


def definition_for(group: str, version: str, kind: str) -> str:
    """The definition name carrying this group-version-kind."""
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            if (gvk["group"], gvk["version"], gvk["kind"]) == (group, version, kind):
                return name
    raise KeyError(f"no definition for {group}/{version} {kind}")


def v3_document(served: Sequence[Resource]) -> JsonObj:
    """The OpenAPI 3.0 document of one group/version: paths plus every shipped schema."""
    paths: JsonObj = {}
    for resource in served:
        paths.update(_resource_paths(resource))
    schemas = {name: _v3(schema) for name, schema in definitions().items()}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def v3_root(hashes: dict[str, str]) -> JsonObj:
    """`/openapi/v3`: where each group/version's document is, with its content hash."""
    return {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
            for path, digest in sorted(hashes.items())
        }
    }


def openapi_routes(served: Sequence[Resource]) -> list[web.RouteDef]:
    """`/openapi/v3` and one document per served group/version, encoded once."""
    documents: dict[str, bytes] = {}
    served = [r for r in served if r.documented]
    for group_version in sorted({r.group_version for r in served}):
        path = f"api/{group_version}" if "/" not in group_version else f"apis/{group_version}"
        resources_here = [r for r in served if r.group_version == group_version]
        documents[path] = orjson.dumps(v3_document(resources_here))
    root = orjson.dumps(v3_root({p: _hash(body) for p, body in documents.items()}))

    async def index(_: web.Request) -> web.Response:
        return web.Response(body=root, content_type="application/json")

    async def document(request: web.Request) -> web.Response:
        body = documents.get(request.match_info["path"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/json")

    return [web.get("/openapi/v3", index), web.get("/openapi/v3/{path:.+}", document)]


def _hash(body: bytes) -> str:
    return hashlib.sha512(body).hexdigest().upper()


def _v3(node: Any) -> Any:
    """Swagger 2.0 schema -> OpenAPI 3: refs into components, a ref with siblings in allOf."""
    if isinstance(node, list):
        return [_v3(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _v3(v) for k, v in node.items() if k != "$ref"}
    if "$ref" in node:
        ref = {"$ref": node["$ref"].replace("#/definitions/", "#/components/schemas/")}
        if not out:
            return ref
        out["allOf"] = [ref]
    return out


def _resource_paths(resource: Resource) -> JsonObj:
    base = f"/api/{resource.version}" if not resource.group else f"/apis/{resource.group_version}"
    scope, collection, in_scope = "", base, _CLUSTER
    if resource.namespaced:
        scope, collection, in_scope = "Namespaced", f"{base}/namespaces/{{namespace}}", _IN_NS
    collection += f"/{resource.name}"
    item, named = collection + "/{name}", ("name", *in_scope)
    one = _ref(definition_for(resource.group, resource.version, resource.kind))
    many = _ref(definition_for(resource.group, resource.version, resource.kind + "List"))
    status = _ref("io.k8s.apimachinery.pkg.apis.meta.v1.Status")
    op = functools.partial(_operation, resource)
    paths: JsonObj = {
        collection: {
            "get": op("list", scope, many, _LIST, path=in_scope),
            "post": op("post", scope, one, _WRITE, path=in_scope, body=one),
            "delete": op("deletecollection", scope, status, _LIST, path=in_scope),
        },
        item: {
            **_read_write(op, scope, one, named),
            "delete": op("delete", scope, one, _DELETE, path=named),
        },
    }
    if resource.namespaced:
        paths[f"{base}/{resource.name}"] = {"get": op("list", "ForAllNamespaces", many, _LIST)}
    _drop_unserved(paths, resource.verbs, collection)
    for sub in resource.subresources:
        suffix = f"{scope}{sub.name.capitalize()}"
        if sub.name == "log":
            text = {"type": "string"}
            log = op("get", suffix, text, _LOG, path=named, media="text/plain")
            paths[f"{item}/{sub.name}"] = {"get": log}
        elif sub.name == "status":
            paths[f"{item}/{sub.name}"] = _read_write(op, suffix, one, named)
        # exec is a WebSocket upgrade; no client reads its operation from OpenAPI
    return paths


def _drop_unserved(paths: JsonObj, verbs: Sequence[str], collection: str) -> None:
    """Keep only the operations whose verb the resource serves."""
    for path, item in paths.items():
        for method in list(item):
            if path == collection:
                verb = {"get": "list", "post": "create", "delete": "deletecollection"}[method]
            else:
                verb = {"put": "update", "get": "get" if "{name}" in path else "list"}.get(
                    method, method
                )
            if verb not in verbs:
                del item[method]


def _read_write(op: Any, suffix: str, one: Schema, named: Sequence[str]) -> JsonObj:
    """get, put and patch of one object (or of its status subresource)."""
    patch_body = {"type": "object"}
    return {
        "get": op("get", suffix, one, (), path=named),
        "put": op("put", suffix, one, _WRITE, path=named, body=one),
        "patch": op("patch", suffix, one, _PATCH, path=named, body=patch_body, patch=True),
    }


_IN_NS: tuple[str, ...] = ("namespace",)
_CLUSTER: tuple[str, ...] = ()
_PATCH = ("dryRun", "fieldManager", "fieldValidation", "force")
_LIST = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
         "resourceVersionMatch", "timeoutSeconds", "watch", "allowWatchBookmarks")  # fmt: skip
_WRITE = ("dryRun", "fieldManager", "fieldValidation")
_DELETE = ("dryRun", "gracePeriodSeconds", "propagationPolicy")
_LOG = ("container", "follow", "limitBytes", "previous", "sinceSeconds", "sinceTime",
        "tailLines", "timestamps")  # fmt: skip
_PARAMS: dict[str, tuple[str, str]] = {
    "allowWatchBookmarks": ("boolean", "allowWatchBookmarks requests watch events with type "
                            "\"BOOKMARK\"."),
    "container": ("string", "The container for which to stream logs."),
    "continue": ("string", "The continue option should be set when retrieving more results "
                 "from the server."),
    "dryRun": ("string", "When present, indicates that modifications should not be persisted."),
    "fieldManager": ("string", "fieldManager is a name associated with the actor or entity "
                     "that is making these changes."),
    "fieldSelector": ("string", "A selector to restrict the list of returned objects by their "
                      "fields."),
    "fieldValidation": ("string", "fieldValidation instructs the server on how to handle "
                        "objects in the request (POST/PUT/PATCH) containing unknown or "
                        "duplicate fields. Valid values are: Ignore, Warn (the default) and "
                        "Strict."),
    "follow": ("boolean", "Follow the log stream of the pod."),
    "force": ("boolean", "Force is going to \"force\" Apply requests."),
    "gracePeriodSeconds": ("integer", "The duration in seconds before the object should be "
                           "deleted."),
    "labelSelector": ("string", "A selector to restrict the list of returned objects by their "
                      "labels."),
    "limit": ("integer", "limit is a maximum number of responses to return for a list call."),
    "limitBytes": ("integer", "If set, the number of bytes to read from the server before "
                   "terminating the log output."),
    "previous": ("boolean", "Return previous terminated container logs."),
    "propagationPolicy": ("string", "Whether and how garbage collection will be performed."),
    "resourceVersion": ("string", "resourceVersion sets a constraint on what resource versions "
                        "a request may be served from."),
    "resourceVersionMatch": ("string", "resourceVersionMatch determines how resourceVersion is "
                             "applied to list calls."),
    "sinceSeconds": ("integer", "A relative time in seconds before the current time from which "
                     "to show logs."),
    "sinceTime": ("string", "An RFC3339 timestamp from which to show logs."),
    "tailLines": ("integer", "If set, the number of lines from the end of the logs to show."),
    "timeoutSeconds": ("integer", "Timeout for the list/watch call."),
    "timestamps": ("boolean", "If true, add an RFC3339 or RFC3339Nano timestamp at the "
                   "beginning of every line of log output."),
    "watch": ("boolean", "Watch for changes to the described resources."),
}  # fmt: skip


def _operation(
    resource: Resource,
    action: str,
    suffix: str,
    response: Schema,
    query: Sequence[str],
    *,
    path: Sequence[str] = (),
    body: Schema | None = None,
    patch: bool = False,
    media: str = "application/json",
) -> JsonObj:
    operation: JsonObj = {
        "operationId": f"{action}{resource.kind}{suffix}",
        "parameters": [_path_param(p) for p in path] + [_query_param(q) for q in query],
        "responses": {"200": {"description": "OK", "content": {media: {"schema": response}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {
            "group": resource.group,
            "version": resource.version,
            "kind": resource.kind,
        },
    }
    if body is not None:
        types = PATCH_TYPES if patch else ("application/json",)
        operation["requestBody"] = {
            "content": {t: {"schema": body} for t in types},
            "required": True,
        }
    return operation


def _path_param(name: str) -> JsonObj:
    what = "name of the resource" if name == "name" else "object name and auth scope"
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": what,
        "schema": {"type": "string", "uniqueItems": True},
    }


def _query_param(name: str) -> JsonObj:
    kind, description = _PARAMS[name]
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": kind, "uniqueItems": True},
    }


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}
