"""Pod validation with apiserver's rules and wording, so 422s match what a cluster answers.

Pure functions returning `Status` causes; the server turns a non-empty list into 422 Invalid.
"""

from __future__ import annotations

import re
from typing import Any

from .status import JsonObj, field_cause

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_RE = re.compile(_LABEL)
DNS1123_SUBDOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    f"regex used for validation is '{DNS1123_SUBDOMAIN_RE.pattern}')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc', "
    f"regex used for validation is '{DNS1123_LABEL_RE.pattern}')"
)
QUALIFIED_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc', regex "
    f"used for validation is '{QUALIFIED_NAME_RE.pattern}')"
)
VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or "
    f"'my_value', or '12345', regex used for validation is '({QUALIFIED_NAME_RE.pattern})?')"
)

# Spec fields a running pod may change (apiserver's ValidatePodUpdate allow-list).
MUTABLE_CONTAINER_FIELDS = ("image",)
MUTABLE_SPEC_FIELDS = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def subdomain_errors(value: str) -> list[str]:
    if len(value) > 253:
        return ["must be no more than 253 characters"]
    return [] if DNS1123_SUBDOMAIN_RE.fullmatch(value) else [SUBDOMAIN_MSG]


def dns_label_errors(value: str) -> list[str]:
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    return [] if DNS1123_LABEL_RE.fullmatch(value) else [LABEL_MSG]


def qualified_name_errors(key: str) -> list[str]:
    """Errors for a label or annotation key: an optional DNS prefix, '/', then a name."""
    prefix, _, name = key.rpartition("/")
    errors = [f"prefix part {e}" for e in subdomain_errors(prefix)] if "/" in key else []
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    elif not QUALIFIED_NAME_RE.fullmatch(name):
        errors.append(QUALIFIED_MSG)
    return errors


def label_value_errors(value: str) -> list[str]:
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    return [] if value == "" or QUALIFIED_NAME_RE.fullmatch(value) else [VALUE_MSG]


def invalid_value(field: str, value: Any, message: str) -> JsonObj:
    return field_cause(field, f'Invalid value: "{value}": {message}')


def validate_metadata(meta: JsonObj) -> list[JsonObj]:
    causes = [
        invalid_value("metadata.name", meta["name"], e) for e in subdomain_errors(meta["name"])
    ]
    labels = meta.get("labels") or {}
    for key, value in labels.items():
        causes += [invalid_value("metadata.labels", key, e) for e in qualified_name_errors(key)]
        if not isinstance(value, str):
            causes.append(invalid_value(f"metadata.labels[{key}]", value, "must be a string"))
            continue
        causes += [invalid_value("metadata.labels", value, e) for e in label_value_errors(value)]
    for key in meta.get("annotations") or {}:
        causes += [
            invalid_value("metadata.annotations", key, e) for e in qualified_name_errors(key)
        ]
    return causes


def validate_spec(spec: JsonObj) -> list[JsonObj]:
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [field_cause("spec.containers", "Required value", "FieldValueRequired")]
    seen: set[str] = set()  # names are unique across init and app containers
    causes = _container_errors(spec.get("initContainers") or [], "spec.initContainers", seen)
    return causes + _container_errors(containers, "spec.containers", seen)


def _container_errors(containers: list[Any], field: str, seen: set[str]) -> list[JsonObj]:
    causes: list[JsonObj] = []
    for i, container in enumerate(containers):
        path = f"{field}[{i}]"
        name = container.get("name") if isinstance(container, dict) else None
        if not name:
            causes.append(field_cause(f"{path}.name", "Required value", "FieldValueRequired"))
        else:
            causes += [invalid_value(f"{path}.name", name, e) for e in dns_label_errors(name)]
            if name in seen:
                message = f'Duplicate value: "{name}"'
                causes.append(field_cause(f"{path}.name", message, "FieldValueDuplicate"))
            seen.add(name)
        if not isinstance(container, dict) or not container.get("image"):
            causes.append(field_cause(f"{path}.image", "Required value", "FieldValueRequired"))
        if isinstance(container, dict):
            causes += _env_errors(container.get("env") or [], f"{path}.env")
    return causes


_ENV_FIELD_PATHS = (
    "metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace",
    "metadata.uid", "spec.nodeName", "spec.serviceAccountName", "status.hostIP",
    "status.hostIPs", "status.podIP", "status.podIPs",
)  # fmt: skip
_PLAIN_FIELD_PATHS = frozenset(_ENV_FIELD_PATHS) - {"metadata.annotations", "metadata.labels"}
KEYED_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")  # those two need a key


def _env_errors(env: list[Any], path: str) -> list[JsonObj]:
    """Downward-API references to fields the kubelet does not expose, as apiserver words it."""
    causes: list[JsonObj] = []
    for i, var in enumerate(env):
        valued = var.get("valueFrom") if isinstance(var, dict) else None
        field_ref = valued.get("fieldRef") if isinstance(valued, dict) else None
        if not isinstance(field_ref, dict):
            continue
        field_path = str(field_ref.get("fieldPath") or "")
        if field_path not in _PLAIN_FIELD_PATHS and not KEYED_FIELD.fullmatch(field_path):
            supported = ", ".join(f'"{p}"' for p in _ENV_FIELD_PATHS)
            causes.append(
                field_cause(
                    f"{path}[{i}].valueFrom.fieldRef.fieldPath",
                    f'Unsupported value: "{field_path}": supported values: {supported}',
                    "FieldValueNotSupported",
                )
            )
    return causes


def validate_pod(pod: JsonObj) -> list[JsonObj]:
    """All field errors of a pod about to be stored (after defaulting)."""
    return validate_metadata(pod["metadata"]) + validate_spec(pod.get("spec") or {})


def spec_update_errors(old: JsonObj, new: JsonObj) -> list[JsonObj]:
    """A pod's spec is immutable except for container images and a few scheduling fields."""
    if _immutable_view(old) == _immutable_view(new):
        return []
    message = (
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
        "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it "
        "was previously negative)"
    )
    return [field_cause("spec", message, "FieldValueForbidden")]


def _immutable_view(spec: JsonObj) -> JsonObj:
    view = {k: v for k, v in spec.items() if k not in MUTABLE_SPEC_FIELDS}
    view["containers"] = [
        {k: v for k, v in c.items() if k not in MUTABLE_CONTAINER_FIELDS}
        for c in spec.get("containers") or []
        if isinstance(c, dict)
    ]
    return view
