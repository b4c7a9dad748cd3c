"""What apiserver fills in on create: names from generateName, uid, timestamps, spec defaults."""

from __future__ import annotations

import functools
import random
import time
import uuid
from typing import Any

from .status import JsonObj, bad_request, field_cause, invalid

# apiserver's generateName alphabet: no vowels (no words) and no look-alike characters.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_OWNED_METADATA = ("uid", "creationTimestamp", "resourceVersion", "deletionTimestamp")


def rfc3339(at: float | None = None) -> str:
    """metav1.Time: UTC, second precision."""
    return _format_second(int(time.time() if at is None else at))


@functools.lru_cache(maxsize=4)
def _format_second(second: int) -> str:
    """Cached: every status write stamps times, and most land in the same second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def parse_body(body: Any, namespace: str) -> JsonObj:
    """Check kind and namespace of a request body the way apiserver's decoder does."""
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object")
    kind = body.get("kind")
    if kind not in (None, "Pod"):
        raise bad_request(f"the API version in the data (v1) does not match the kind {kind}")
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise bad_request("metadata must be a JSON object")
    body_namespace = metadata.get("namespace")
    if body_namespace and body_namespace != namespace:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    return {**body, "metadata": {**metadata, "namespace": namespace}}


def new_pod(body: JsonObj, rng: random.Random) -> JsonObj:
    """A pod as apiserver stores it on create; the caller validates it afterwards."""
    metadata = {k: v for k, v in body["metadata"].items() if k not in _SERVER_OWNED_METADATA}
    if not metadata.get("name"):
        prefix = metadata.get("generateName")
        if not prefix:
            cause = field_cause(
                "metadata.name",
                "Required value: name or generateName is required",
                "FieldValueRequired",
            )
            raise invalid("", [cause])
        metadata["name"] = prefix + "".join(rng.choices(_NAME_ALPHABET, k=5))
    metadata["uid"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    metadata["creationTimestamp"] = rfc3339()
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": default_spec(body.get("spec")),
        "status": {"phase": "Pending", "qosClass": qos_class(body.get("spec"))},
    }


def default_spec(spec: Any) -> JsonObj:
    if not isinstance(spec, dict):
        return {}
    defaults = {
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": spec.get("serviceAccountName", "default"),
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "enableServiceLinks": True,
        "priority": 0,
    }
    for kind in ("initContainers", "containers"):
        if isinstance(containers := spec.get(kind), list):
            spec = {**spec, kind: [_default_container(c) for c in containers]}
    return {**defaults, **spec}


def _default_container(container: Any) -> Any:
    if not isinstance(container, dict):
        return container
    image = str(container.get("image") or "")
    tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
    pull = "IfNotPresent" if tagged and not image.endswith(":latest") else "Always"
    defaults = {
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": pull,
    }
    defaulted = {**defaults, **container}
    if isinstance(env := container.get("env"), list):
        defaulted["env"] = [_default_env_var(var) for var in env]
    return defaulted


def _default_env_var(var: Any) -> Any:
    """A downward-API reference names its API version; apiserver fills in v1."""
    field_ref = ((var.get("valueFrom") or {}) if isinstance(var, dict) else {}).get("fieldRef")
    if not isinstance(field_ref, dict) or field_ref.get("apiVersion"):
        return var
    return {**var, "valueFrom": {**var["valueFrom"], "fieldRef": {"apiVersion": "v1", **field_ref}}}


def qos_class(spec: Any) -> str:
    containers = spec.get("containers") if isinstance(spec, dict) else None
    resources = [c.get("resources") or {} for c in containers or [] if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        r.get("limits") and r.get("requests", r["limits"]) == r["limits"] for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"
