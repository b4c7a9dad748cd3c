"""Airflow's pod reconcile semantics (`PodGenerator.reconcile_pods`) on API-form dicts.

A task's `pod_override` is laid over the pod template: metadata labels and annotations are
merged (the override wins per key), containers are merged by name, and the lists that
Airflow extends (a container's env, envFrom, ports, volumeMounts, volumeDevices; the pod's
volumes and initContainers; finalizers, ownerReferences) keep the template's entries and add
the override's. Every other field is replaced whole by the override's value when it sets one.

Two deliberate differences from Airflow: containers match by name rather than position (an
unnamed override container targets the first, base container), and an override entry of a
named list replaces the template entry of the same name instead of duplicating it, which the
API would reject. `False` and `0` count as set values here; Airflow silently drops them.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

JsonObj = dict[str, Any]

_METADATA_MAPS: Final = ("labels", "annotations")
_METADATA_LISTS: Final = ("finalizers", "ownerReferences", "managedFields")
_SPEC_LISTS: Final = ("initContainers", "volumes")
_CONTAINER_LISTS: Final = ("env", "envFrom", "ports", "volumeMounts", "volumeDevices")


def reconcile_pod(base: JsonObj, override: JsonObj | None) -> JsonObj:
    """A new pod: `override` deep-merged over `base`; it shares nothing with either.

    The merge itself only builds new containers around the inputs' values; one JSON round
    trip at the end makes the result independent (much cheaper than copying at each level).
    """
    check_override(override)
    merged = _overlay(base, override or {})
    if override and ("metadata" in base or "metadata" in override):
        merged["metadata"] = _reconcile_metadata(base.get("metadata"), override.get("metadata"))
    if override and ("spec" in base or "spec" in override):
        merged["spec"] = _reconcile_spec(base.get("spec"), override.get("spec"))
    pod: JsonObj = json_copy(merged)
    return pod


def check_override(override: Any) -> None:
    """TypeError naming the first field the merge cannot walk and what it must be, e.g.
    `spec.containers[0].env must be a list, not int`."""
    if override is None:
        return
    _expect(override, dict, "pod_override")
    metadata, spec = override.get("metadata"), override.get("spec")
    if metadata is not None:
        _expect(metadata, dict, "metadata")
        for name in _METADATA_MAPS:
            _expect(metadata.get(name), dict, f"metadata.{name}")
        for name in _METADATA_LISTS:
            _expect(metadata.get(name), list, f"metadata.{name}")
    if spec is None:
        return
    _expect(spec, dict, "spec")
    for name in ("containers", *_SPEC_LISTS):
        _expect(spec.get(name), list, f"spec.{name}")
    for i, container in enumerate(spec.get("containers") or []):
        where = f"spec.containers[{i}]"
        _expect(container, dict, where)
        for name in _CONTAINER_LISTS:
            _expect(container.get(name), list, f"{where}.{name}")


def _expect(value: Any, kind: type, where: str) -> None:
    if value is not None and not isinstance(value, kind):
        wanted = "an object" if kind is dict else "a list"
        raise TypeError(f"{where} must be {wanted}, not {type(value).__name__}")


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data; TypeError for anything JSON cannot hold."""
    try:
        return orjson.loads(orjson.dumps(value))
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from None


def _reconcile_metadata(base: JsonObj | None, override: JsonObj | None) -> JsonObj:
    base, override = base or {}, override or {}
    merged = _overlay(base, override)
    for name in _METADATA_MAPS:
        if base.get(name) or override.get(name):
            merged[name] = {**(base.get(name) or {}), **(override.get(name) or {})}
    for name in _METADATA_LISTS:
        _extend_into(merged, base, override, name)
    return merged


def _reconcile_spec(base: JsonObj | None, override: JsonObj | None) -> JsonObj:
    base, override = base or {}, override or {}
    merged = _overlay(base, override)
    if base.get("containers") or override.get("containers"):
        merged["containers"] = reconcile_containers(
            base.get("containers") or [], override.get("containers") or []
        )
    for name in _SPEC_LISTS:
        _extend_into(merged, base, override, name)
    return merged


def reconcile_containers(base: list[JsonObj], override: list[JsonObj]) -> list[JsonObj]:
    """Containers merged by name; override containers with new names are appended."""
    merged = list(base)
    index = {c.get("name"): i for i, c in enumerate(merged)}
    for container in override:
        name = container.get("name")
        target = index.get(name) if name else (0 if merged else None)
        if target is None:
            index[name] = len(merged)
            merged.append(container)
        else:
            merged[target] = _reconcile_container(merged[target], container)
    return merged


def _reconcile_container(base: JsonObj, override: JsonObj) -> JsonObj:
    merged = _overlay(base, override)
    merged["name"] = base.get("name") or override.get("name")
    for name in _CONTAINER_LISTS:
        _extend_into(merged, base, override, name)
    return merged


def _overlay(base: JsonObj, override: JsonObj) -> JsonObj:
    """Shallow merge: the override's set values replace the base's (Airflow's merge_objects)."""
    merged = dict(base)
    for name, value in override.items():
        if _is_set(value) or name not in merged:
            merged[name] = value
    return merged


def _extend_into(merged: JsonObj, base: JsonObj, override: JsonObj, name: str) -> None:
    combined = extend_list(base.get(name), override.get(name))
    if combined:
        merged[name] = combined


def extend_list(base: list[Any] | None, override: list[Any] | None) -> list[Any]:
    """Base entries then override entries (shared, not copied); a named override entry
    replaces its namesake."""
    override = override or []
    replaced = {item["name"] for item in override if isinstance(item, dict) and "name" in item}
    kept = [
        item for item in base or [] if not (isinstance(item, dict) and item.get("name") in replaced)
    ]
    return kept + list(override)


def _is_set(value: Any) -> bool:
    return value is not None and value != {} and value != [] and value != ""
