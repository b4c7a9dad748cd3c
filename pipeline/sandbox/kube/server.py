"""The core/v1 pods API on aiohttp: routes, request parsing, Status errors.

Handlers stay thin: parsing here, rules in `validation`/`patch`/`pods`, state in `store`,
streaming in `watch`. Every request first passes `Faults.admit` for its verb.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml
from aiohttp import web

from . import fields, podattach, podexec, podlog, table
from .collection import Collection, Printer, json_response
from .discovery import POD_RESOURCE, Resource, discovery_routes
from .faults import Faults
from .kubelet import Kubelet
from .openapi import openapi_routes
from .patch import APPLY_PATCH, apply_patch
from .pods import new_pod, parse_body, rfc3339
from .query import integer
from .selectors import FIELD_PATHS, PodSelector, parse_selector
from .status import (
    ApiError,
    JsonObj,
    bad_request,
    conflict,
    field_cause,
    invalid,
    unauthorized,
)
from .store import PodStore, pod_key
from .validation import spec_update_errors, validate_metadata, validate_pod

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PODS = "/api/v1/namespaces/{namespace}/pods"
POD = PODS + "/{name}"
POD_DEFINITION = "io.k8s.api.core.v1.Pod"
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})
_NO_MANAGER = "Required value: is required for apply patch"
_PRESERVED_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


@dataclass
class ServerStats:
    """What the API saw, for tests asserting on client behaviour (e.g. batch limits)."""

    requests: dict[str, int] = field(default_factory=dict)
    creates_in_flight: int = 0
    max_creates_in_flight: int = 0


def status_response(error: ApiError) -> web.Response:
    response = json_response(error.status(), error.code)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


class PodApi:
    def __init__(
        self,
        store: PodStore,
        kubelet: Kubelet,
        faults: Faults,
        *,
        bookmark_interval: float = 60.0,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.kubelet = kubelet
        self.faults = faults
        self.stats = ServerStats()
        # refuses a pod for its namespace (one being deleted); the cluster API sets it
        self.require_active: Callable[[str, str, str], None] = lambda namespace, name, kind: None
        self._random = random.Random(seed)
        printer = Printer(table.POD_COLUMNS, table.pod_row)
        self.pods = Collection(
            store,
            faults,
            list_kind="PodList",
            printer=printer,
            field_paths=FIELD_PATHS,
            bookmark_interval=bookmark_interval,
        )

    def close_watches(self) -> None:
        self.pods.close_watches()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/pods", self.list_pods),
            web.get(PODS, self.list_pods),
            web.post(PODS, self.create),
            web.delete(PODS, self.delete_collection),
            web.get(POD, self.get),
            web.put(POD, self.replace),
            web.patch(POD, self.patch),
            web.delete(POD, self.delete),
            web.get(POD + "/status", self.get),
            web.put(POD + "/status", self.replace),
            web.patch(POD + "/status", self.patch),
            web.get(POD + "/log", self.read_log),
            web.get(POD + "/exec", self.exec),
            web.post(POD + "/exec", self.exec),
            web.get(POD + "/attach", self.attach),
            web.post(POD + "/attach", self.attach),
        ]

    async def admit(self, verb: str) -> None:
        self.stats.requests[verb] = self.stats.requests.get(verb, 0) + 1
        await self.faults.admit(verb)

    async def create(self, request: web.Request) -> web.Response:
        self.stats.creates_in_flight += 1
        self.stats.max_creates_in_flight = max(
            self.stats.max_creates_in_flight, self.stats.creates_in_flight
        )
        try:
            await self.admit("create")
            return self._create(request, await read_json(request))
        finally:
            self.stats.creates_in_flight -= 1

    def _create(self, request: web.Request, body: Any) -> web.Response:
        body = parse_body(body, request.match_info["namespace"])
        body, warnings = _decode(request, body)
        pod = new_pod(body, self._random)
        _check(pod, validate_pod(pod))
        self.require_active(pod["metadata"]["namespace"], pod["metadata"]["name"], "pods")
        if _dry_run(request.query.getall("dryRun", [])):
            self.store.require_absent(pod_key(pod))
            return json_response(pod, 201, warnings)
        return json_response(self.store.create(pod), 201, warnings)

    async def get(self, request: web.Request) -> web.Response:
        await self.admit("get")
        pod = self.store.get(_key(request))
        if request.path.endswith("/status"):
            return json_response(pod)
        return self.pods.one(request, pod)

    async def list_pods(self, request: web.Request) -> web.StreamResponse:
        return await self.pods.list_or_watch(request, self.admit)

    async def replace(self, request: web.Request) -> web.Response:
        await self.admit("update")
        old = self.store.get(_key(request))
        body = parse_body(await read_json(request), request.match_info["namespace"])
        body, warnings = _decode(request, body)
        return json_response(self._update(request, old, body), warnings=warnings)

    async def patch(self, request: web.Request) -> web.Response:
        await self.admit("patch")
        applying = request.content_type == APPLY_PATCH
        if applying and not request.query.get("fieldManager"):
            needed = field_cause("fieldManager", _NO_MANAGER, "FieldValueRequired")
            raise invalid("", [needed], "PatchOptions.meta.k8s.io")
        body = await (_read_yaml(request) if applying else read_json(request))
        if applying and _key(request) not in self.store:
            return self._applied_new(request, body)
        old = self.store.get(_key(request))
        patched = apply_patch(request.content_type, old, body)
        patched, warnings = _decode(request, patched)
        return json_response(self._update(request, old, patched), warnings=warnings)

    def _applied_new(self, request: web.Request, body: Any) -> web.Response:
        """Server-side apply of a pod that does not exist yet creates it, named by the URL."""
        name = request.match_info["name"]
        given = (body.get("metadata") or {}).get("name") if isinstance(body, dict) else None
        if given != name:
            raise bad_request(
                f"the name of the object ({given}) does not match the name on the URL"
            )
        return self._create(request, body)

    async def delete(self, request: web.Request) -> web.Response:
        await self.admit("delete")
        options = await _delete_options(request)
        return json_response(self._delete(self.store.get(_key(request)), options))

    async def delete_collection(self, request: web.Request) -> web.Response:
        await self.admit("deletecollection")
        options = await _delete_options(request)
        query = request.query
        selector = parse_selector(query.get("labelSelector"), query.get("fieldSelector"))
        pods = self.store.select(request.match_info["namespace"], selector)
        items = [self._delete(pod, options) for pod in pods]
        meta = {"resourceVersion": str(self.store.rv)}
        return json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items}
        )

    def delete_all(self, namespace: str) -> None:
        """Delete every pod of `namespace`, each as a plain `kubectl delete pod` would."""
        for pod in self.store.select(namespace, PodSelector()):
            self._delete(pod, {})

    async def read_log(self, request: web.Request) -> web.StreamResponse:
        await self.admit("log")
        key = _key(request)
        pod = self.store.get(key)
        window = podlog.log_window(request.query)
        buffer = podlog.pick_buffer(pod, self.kubelet.logs.get(key, {}), request.query)
        return await podlog.respond(request, buffer, window)

    async def exec(self, request: web.Request) -> web.StreamResponse:
        await self.admit("exec")
        runs_processes = self.kubelet.mode == "process"
        return await podexec.serve(request, self.store, _key(request), runs_processes)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        await self.admit("attach")
        key = _key(request)
        logs, live = self.kubelet.logs.get(key, {}), self.kubelet.live.get(key, {})
        return await podattach.serve(request, self.store, key, logs, live)

    def _update(self, request: web.Request, old: JsonObj, new: JsonObj) -> JsonObj:
        """PUT/PATCH semantics for the pod or its status subresource; no-ops keep the RV."""
        meta = new.get("metadata") or {}
        name = old["metadata"]["name"]
        if meta.get("name", name) != name:
            given = meta.get("name")
            raise bad_request(
                f"the name of the object ({given}) does not match the name on the URL"
            )
        expected_rv = meta.get("resourceVersion")
        if expected_rv and expected_rv != old["metadata"]["resourceVersion"]:
            raise conflict(name)
        if request.path.endswith("/status"):
            result = {**old, "status": new.get("status") or {}}
        else:
            kept = {k: old["metadata"][k] for k in _PRESERVED_METADATA if k in old["metadata"]}
            metadata = {**meta, **kept, "namespace": old["metadata"]["namespace"], "name": name}
            result = {**new, "metadata": metadata, "status": old.get("status", {})}
            _check(
                result,
                validate_metadata(metadata)
                + spec_update_errors(old["spec"], result.get("spec") or {}),
            )
        result["metadata"] = {
            **result["metadata"],
            "resourceVersion": old["metadata"]["resourceVersion"],
        }
        if result == old:
            return old
        if _dry_run(request.query.getall("dryRun", [])):
            return result
        return self.store.replace(result)

    def _delete(self, pod: JsonObj, options: JsonObj) -> JsonObj:
        """Terminal or unscheduled pods go at once; others get a grace period on the node."""
        _check_preconditions(pod, options.get("preconditions") or {})
        if _dry_run(options.get("dryRun") or []):
            return pod
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        phase = pod["status"].get("phase")
        if grace <= 0 or not pod["spec"].get("nodeName") or phase in ("Succeeded", "Failed"):
            return self.store.remove(pod_key(pod))
        if pod["metadata"].get("deletionTimestamp"):
            return pod
        meta = {
            **pod["metadata"],
            "deletionTimestamp": rfc3339(),
            "deletionGracePeriodSeconds": grace,
        }
        return self.store.replace({**pod, "metadata": meta})


def build_app(
    api: PodApi,
    token: str | None,
    extra_routes: list[web.RouteDef],
    served: Sequence[Resource] = (POD_RESOURCE,),
) -> web.Application:
    """The emulator's app: the pods API, `extra_routes`, probes, discovery and OpenAPI."""
    app = web.Application(middlewares=[_errors_middleware(token)], client_max_size=16 * 1024 * 1024)
    app.add_routes(
        api.routes()
        + extra_routes
        + _probe_routes()
        + discovery_routes(served)
        + openapi_routes(served)
    )
    return app


def _errors_middleware(token: str | None) -> Any:
    expected = f"Bearer {token}" if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if (
                expected
                and request.path not in OPEN_PATHS
                and request.headers.get("Authorization") != expected
            ):
                raise unauthorized()
            return await handler(request)
        except ApiError as error:
            return status_response(error)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return status_response(
                ApiError(
                    error.status,
                    error.reason.replace(" ", ""),
                    "the server could not find the requested resource"
                    if error.status == 404
                    else error.reason,
                    details={},  # as apiserver: kubectl reads details of a 404 (`debug`)
                )
            )

    return middleware


def _probe_routes() -> list[web.RouteDef]:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    return [web.get(p, ok) for p in ("/healthz", "/livez", "/readyz")]


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body of the request could not be decoded as JSON: {exc}") from None


async def _read_yaml(request: web.Request) -> Any:
    """An apply body: YAML, which JSON (what kubectl sends) is a case of."""
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        if any(isinstance(token, yaml.AliasToken) for token in yaml.scan(raw)):
            raise bad_request("YAML aliases are not accepted in an apply body")  # no bombs
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise bad_request(f"the body of the request could not be decoded as YAML: {exc}") from None


async def _delete_options(request: web.Request) -> JsonObj:
    body = await request.read()  # aiohttp caches it, so read_json reads it again for free
    options: Any = await read_json(request) if body.strip() else {}
    if not isinstance(options, dict):
        raise bad_request("DeleteOptions must be a JSON object")
    dry_run = request.query.getall("dryRun", [])
    if dry_run:
        options["dryRun"] = dry_run
    grace = request.query.get("gracePeriodSeconds")
    if grace is not None:
        options["gracePeriodSeconds"] = integer(request.query, "gracePeriodSeconds")
    return options


def _dry_run(values: Any) -> bool:
    """`dryRun=All`: validate and answer, but persist nothing (the only value apiserver takes)."""
    if not isinstance(values, list) or any(v != "All" for v in values):
        raise bad_request(f'dryRun: Unsupported value: {values!r}: supported values: "All"')
    return bool(values)


def _check_preconditions(pod: JsonObj, preconditions: JsonObj) -> None:
    for field_name in ("uid", "resourceVersion"):
        wanted = preconditions.get(field_name)
        actual = pod["metadata"].get(field_name)
        if wanted and wanted != actual:
            message = (
                f"Precondition failed: {field_name} in precondition: {wanted}, "
                f"{field_name} in object meta: {actual}"
            )
            raise ApiError(409, "Conflict", message)


def _check(pod: JsonObj, causes: list[JsonObj]) -> None:
    if causes:
        raise invalid(pod["metadata"].get("name", ""), causes)


def _decode(request: web.Request, body: JsonObj) -> tuple[JsonObj, list[str]]:
    """The body as a Pod decodes: undeclared fields dropped, reported per fieldValidation."""
    return fields.decode(body, POD_DEFINITION, "Pod", fields.field_validation(request.query))


def _key(request: web.Request) -> tuple[str, str]:
    return request.match_info["namespace"], request.match_info["name"]
