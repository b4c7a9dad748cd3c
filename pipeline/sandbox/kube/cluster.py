"""What a cluster has beside pods and a user looks at first: its node, namespaces, service.

`kubectl get nodes`, `kubectl describe node`, `kubectl get namespaces` and `kubectl
cluster-info` are the first things people run against a cluster, so the emulator answers them
with what it is: a single node (the simulated kubelet, `sandbox-node`, whose capacity is this
machine's), its namespaces, and the `kubernetes` service of the API itself. A cluster starts
with four namespaces, and the emulator adds the one it serves; `kubectl create namespace` adds
more, and a pod in a namespace nobody created is refused with 404, as apiserver refuses it.
The node and the service cannot be changed or deleted.
"""

from __future__ import annotations

import os
import platform
import random
import uuid
from typing import Any

from aiohttp import web

from . import protowire
from .collection import Admit, Collection, Printer, json_response
from .discovery import SERVER_VERSION
from .faults import Faults
from .kubelet import NODE_NAME, Mode
from .patch import apply_patch
from .pods import rfc3339
from .podstatus import HOST_IP
from .selectors import FieldPaths, PodSelector
from .server import PodApi, read_json
from .status import JsonObj, bad_request, conflict, forbidden, invalid, not_found
from .store import Event, PodStore, pod_key
from .table import age
from .validation import dns_label_errors, invalid_value, validate_metadata

DEFAULT_MAX_PODS = 110  # the kubelet's --max-pods default
STARTING_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
IMMORTAL_NAMESPACES = ("default", "kube-public", "kube-system")  # apiserver refuses to delete
TERMINATING = "unable to create new content in namespace {} because it is being terminated"
POD_CIDR = "10.244.0.0/24"  # the range pod IPs are given from
API_SERVICE_IP = "10.96.0.1"  # the first address of the default service range
_ROLE_LABEL = "node-role.kubernetes.io/"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # apiserver's: no vowels, no look-alikes
_NAME_PATHS: FieldPaths = {"metadata.name": ("metadata", "name")}
_NAMESPACE_PATHS: FieldPaths = {**_NAME_PATHS, "status.phase": ("status", "phase")}
_SERVICE_PATHS: FieldPaths = {
    **_NAME_PATHS,
    "metadata.namespace": ("metadata", "namespace"),
    "spec.clusterIP": ("spec", "clusterIP"),
    "spec.type": ("spec", "type"),
}


def _column(name: str, priority: int = 0, fmt: str = "") -> JsonObj:
    return {"name": name, "type": "string", "format": fmt, "priority": priority, "description": ""}


NODE_COLUMNS: list[JsonObj] = [
    _column("Name", fmt="name"),
    _column("Status"),
    _column("Roles"),
    _column("Age"),
    _column("Version"),
    *(_column(n, 1) for n in ("Internal-IP", "External-IP", "OS-Image", "Kernel-Version")),
    _column("Container-Runtime", 1),
]
NAMESPACE_COLUMNS: list[JsonObj] = [_column("Name", fmt="name"), _column("Status"), _column("Age")]
SERVICE_COLUMNS: list[JsonObj] = [
    _column("Name", fmt="name"),
    *(_column(n) for n in ("Type", "Cluster-IP", "External-IP", "Port(s)", "Age")),
    _column("Selector", 1),
]


def node_row(node: JsonObj, now: float) -> list[Any]:
    """NAME STATUS ROLES AGE VERSION INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION RUNTIME."""
    status, info = node.get("status") or {}, (node.get("status") or {}).get("nodeInfo") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    state = "Ready" if ready else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = node["metadata"].get("labels") or {}
    roles = sorted(k.removeprefix(_ROLE_LABEL) for k in labels if k.startswith(_ROLE_LABEL))
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [
        node["metadata"]["name"],
        state,
        ",".join(roles) or "<none>",
        age(node, now),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP") or "<none>",
        addresses.get("ExternalIP") or "<none>",
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def namespace_row(namespace: JsonObj, now: float) -> list[Any]:
    """NAME STATUS AGE."""
    phase = (namespace.get("status") or {}).get("phase", "")
    return [namespace["metadata"]["name"], phase, age(namespace, now)]


def service_row(service: JsonObj, now: float) -> list[Any]:
    """NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE SELECTOR."""
    spec = service.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    return [
        service["metadata"]["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        ",".join(spec.get("externalIPs") or []) or "<none>",
        ports or "<none>",
        age(service, now),
        selector or "<none>",
    ]


def api_service(port: int) -> JsonObj:
    """`default/kubernetes`, the service every cluster has for its API server."""
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {
            **_metadata("kubernetes", {"component": "apiserver", "provider": "kubernetes"}),
            "namespace": "default",
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": API_SERVICE_IP,
            "clusterIPs": [API_SERVICE_IP],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    }


def sandbox_node(mode: Mode, max_pods: int | None) -> JsonObj:
    """The simulated kubelet's node: this machine's CPUs and memory, Ready unless it is off."""
    now = rfc3339()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    memory_ki = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
    capacity = {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{memory_ki}Ki",
        "pods": str(max_pods or DEFAULT_MAX_PODS),
    }
    ready = mode != "off"
    conditions = [
        _condition("MemoryPressure", False, "KubeletHasSufficientMemory",
                   "kubelet has sufficient memory available", now),
        _condition("DiskPressure", False, "KubeletHasNoDiskPressure",
                   "kubelet has no disk pressure", now),
        _condition("PIDPressure", False, "KubeletHasSufficientPID",
                   "kubelet has sufficient PID available", now),
        _condition("Ready", ready, "KubeletReady" if ready else "KubeletNotReady",
                   "kubelet is posting ready status" if ready
                   else "the sandbox kubelet is off: pods stay Pending", now),
    ]  # fmt: skip
    labels = {
        "kubernetes.io/hostname": NODE_NAME,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
    }
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": _metadata(NODE_NAME, labels),
        "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": NODE_NAME},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": "Pipeline sandbox",
                "containerRuntimeVersion": f"sandbox://{mode}",
                "kubeletVersion": SERVER_VERSION["gitVersion"],
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch,
            },
        },
    }


def _metadata(name: str, labels: dict[str, str]) -> JsonObj:
    """An object's metadata as apiserver fills it in on create."""
    return {
        "name": name,
        "uid": str(uuid.uuid4()),
        "creationTimestamp": rfc3339(),
        "labels": labels,
    }


def _generated(prefix: Any) -> str:
    """A name from `generateName`, as apiserver makes one (five random characters)."""
    if not isinstance(prefix, str) or not prefix:
        raise bad_request("name or generateName is required")
    return prefix + "".join(random.choices(_NAME_CHARS, k=5))


def _condition(kind: str, true: bool, reason: str, message: str, now: str) -> JsonObj:
    return {
        "type": kind,
        "status": "True" if true else "False",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def new_namespace(name: str, labels: Any = None, annotations: Any = None) -> JsonObj:
    """An Active namespace carrying `labels` and `annotations` (each when it is a mapping),
    and the name label apiserver sets."""
    metadata = _metadata(name, _name_labelled(name, labels))
    if isinstance(annotations, dict) and annotations:
        metadata["annotations"] = annotations
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _name_labelled(name: str, labels: Any) -> dict[str, Any]:
    given = labels if isinstance(labels, dict) else {}
    return {**given, "kubernetes.io/metadata.name": name}


class ClusterApi:
    """Nodes, namespaces and services, read through `Collection` like pods."""

    def __init__(
        self,
        node: JsonObj,
        pods: PodApi,
        event_store: PodStore,
        faults: Faults,
        bookmark_interval: float,
    ) -> None:
        self._admit: Admit = pods.admit
        self._pods = pods
        self.node_store = PodStore(resource="nodes")
        self.node_store.create(node)
        self.namespace_store = PodStore(resource="namespaces")
        for name in STARTING_NAMESPACES:
            self.ensure_namespace(name)
        self.service_store = PodStore(resource="services")
        self._contents = (pods.store, event_store, self.service_store)
        for store in self._contents:
            store.add_listener(self._removed)

        def collection(
            store: PodStore, kind: str, printer: Printer, paths: FieldPaths
        ) -> Collection:
            return Collection(
                store,
                faults,
                list_kind=kind,
                printer=printer,
                field_paths=paths,
                bookmark_interval=bookmark_interval,
            )

        self.nodes = collection(
            self.node_store, "NodeList", Printer(NODE_COLUMNS, node_row), _NAME_PATHS
        )
        self.namespaces = collection(
            self.namespace_store,
            "NamespaceList",
            Printer(NAMESPACE_COLUMNS, namespace_row),
            _NAMESPACE_PATHS,
        )
        self.services = collection(
            self.service_store,
            "ServiceList",
            Printer(SERVICE_COLUMNS, service_row),
            _SERVICE_PATHS,
        )

    def ensure_namespace(self, name: str) -> None:
        if ("", name) not in self.namespace_store:
            self.namespace_store.create(new_namespace(name))

    def serve_api_at(self, port: int) -> None:
        """Add the `kubernetes` service, once the emulator knows its port."""
        if ("default", "kubernetes") not in self.service_store:
            self.service_store.create(api_service(port))

    def close_watches(self) -> None:
        for served in (self.nodes, self.namespaces, self.services):
            served.close_watches()

    def routes(self) -> list[web.RouteDef]:
        services = "/api/v1/namespaces/{namespace}/services"
        return [
            web.get("/api/v1/nodes", self.list_nodes),
            web.get("/api/v1/nodes/{name}", self.get_node),
            web.get("/api/v1/namespaces", self.list_namespaces),
            web.post("/api/v1/namespaces", self.create_namespace),
            web.get("/api/v1/namespaces/{name}", self.get_namespace),
            web.put("/api/v1/namespaces/{name}", self.replace_namespace),
            web.patch("/api/v1/namespaces/{name}", self.patch_namespace),
            web.delete("/api/v1/namespaces/{name}", self.delete_namespace),
            web.get("/api/v1/services", self.list_services),
            web.get(services, self.list_services),
            web.get(services + "/{name}", self.get_service),
        ]

    async def list_services(self, request: web.Request) -> web.StreamResponse:
        return await self.services.list_or_watch(request, self._admit)

    async def get_service(self, request: web.Request) -> web.Response:
        await self._admit("get")
        key = request.match_info["namespace"], request.match_info["name"]
        return self.services.one(request, self.service_store.get(key))

    async def list_nodes(self, request: web.Request) -> web.StreamResponse:
        return await self.nodes.list_or_watch(request, self._admit)

    async def get_node(self, request: web.Request) -> web.Response:
        await self._admit("get")
        return self.nodes.one(request, self.node_store.get(("", request.match_info["name"])))

    async def list_namespaces(self, request: web.Request) -> web.StreamResponse:
        return await self.namespaces.list_or_watch(request, self._admit)

    async def get_namespace(self, request: web.Request) -> web.Response:
        await self._admit("get")
        found = self.namespace_store.get(("", request.match_info["name"]))
        return self.namespaces.one(request, found)

    async def create_namespace(self, request: web.Request) -> web.Response:
        await self._admit("create")
        if request.content_type == protowire.CONTENT_TYPE:  # kubectl create namespace
            body = protowire.object_metadata(await request.read())
        else:
            body = await read_json(request)
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict):
            raise bad_request("a Namespace needs metadata")
        name = meta.get("name") or _generated(meta.get("generateName"))
        if not isinstance(name, str):
            raise bad_request("metadata.name must be a string")
        errors = dns_label_errors(name)
        if errors:
            causes = [invalid_value("metadata.name", name, e) for e in errors]
            raise invalid(name, causes, "Namespace")
        namespace = new_namespace(name, meta.get("labels"), meta.get("annotations"))
        _check_metadata(namespace["metadata"])
        return json_response(self.namespace_store.create(namespace), 201)

    async def replace_namespace(self, request: web.Request) -> web.Response:
        await self._admit("update")
        old = self.namespace_store.get(("", request.match_info["name"]))
        return json_response(self._update_namespace(old, await read_json(request)))

    async def patch_namespace(self, request: web.Request) -> web.Response:
        await self._admit("patch")
        old = self.namespace_store.get(("", request.match_info["name"]))
        patched = apply_patch(request.content_type, old, await read_json(request))
        return json_response(self._update_namespace(old, patched))

    def _update_namespace(self, old: JsonObj, new: Any) -> JsonObj:
        """A namespace's labels and annotations as `new` has them; the rest is the server's."""
        meta = new.get("metadata") if isinstance(new, dict) else None
        if not isinstance(meta, dict):
            raise bad_request("a Namespace needs metadata")
        name = old["metadata"]["name"]
        if meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the URL")
        expected_rv = meta.get("resourceVersion")
        if expected_rv and expected_rv != old["metadata"]["resourceVersion"]:
            raise conflict(name, "namespaces")
        metadata = {**old["metadata"], "labels": _name_labelled(name, meta.get("labels"))}
        metadata.pop("annotations", None)
        if isinstance(meta.get("annotations"), dict) and meta["annotations"]:
            metadata["annotations"] = meta["annotations"]
        _check_metadata(metadata)
        updated = {**old, "metadata": metadata}
        return old if updated == old else self.namespace_store.replace(updated)

    async def delete_namespace(self, request: web.Request) -> web.Response:
        """Mark the namespace Terminating and delete its pods (gracefully, as the kubelet
        stops them); it goes, with its events and services, once its last pod has."""
        await self._admit("delete")
        name = request.match_info["name"]
        namespace = self.namespace_store.get(("", name))
        if name in IMMORTAL_NAMESPACES:
            raise forbidden(name, "namespaces", "this namespace may not be deleted")
        if namespace["metadata"].get("deletionTimestamp"):
            return json_response(namespace)
        metadata = {**namespace["metadata"], "deletionTimestamp": rfc3339()}
        terminating = {**namespace, "metadata": metadata, "status": {"phase": "Terminating"}}
        terminating = self.namespace_store.replace(terminating)
        self._pods.delete_all(name)
        self._remove_if_empty(name)
        return json_response(terminating)

    def require_active(self, namespace: str, name: str, resource: str) -> None:
        """404 for new content in a namespace nobody created, 403 in one being deleted, as
        the API server answers (a mistyped namespace fails here as it would on a cluster)."""
        found = self.namespace_store.find(("", namespace))
        if found is None:
            raise not_found(namespace, "namespaces")
        if found["metadata"].get("deletionTimestamp"):
            raise forbidden(name, resource, TERMINATING.format(namespace))

    def _remove_if_empty(self, namespace: str) -> None:
        """Remove a Terminating namespace, and what is left in it, once it has no pods."""
        found = self.namespace_store.find(("", namespace))
        if found is None or not found["metadata"].get("deletionTimestamp"):
            return
        if self._pods.store.select(namespace, PodSelector()):
            return
        self.namespace_store.remove(("", namespace))  # first: the removals below call back
        for store in self._contents:
            for obj in store.select(namespace, PodSelector()):
                store.remove(pod_key(obj))

    def _removed(self, event: Event) -> None:
        if event.type == "DELETED":  # maybe the last pod of a namespace being deleted
            self._remove_if_empty(event.obj["metadata"]["namespace"])


def _check_metadata(metadata: JsonObj) -> None:
    """422 for labels or annotations apiserver would refuse."""
    causes = validate_metadata(metadata)
    if causes:
        raise invalid(metadata["name"], causes, "Namespace")
