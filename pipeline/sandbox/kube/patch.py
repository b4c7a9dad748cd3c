"""The patch formats apiserver accepts for built-in types, applied without mutating input.

Server-side apply (`apply-patch+yaml`) is approximated: the applied configuration is merged
in as a strategic merge patch. There is no field ownership, so a field the applier dropped
since its last apply is kept and no conflict is ever reported.

Stored pods are shared with the watch history, so every function here builds new containers
instead of editing the target in place.
"""

from __future__ import annotations

import copy
from typing import Any

from .status import ApiError, JsonObj, bad_request, unsupported_media_type

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# patchMergeKey of core/v1 list fields: their items merge by this key instead of replacing.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "conditions": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
}


def apply_patch(content_type: str, target: JsonObj, patch: Any) -> JsonObj:
    """Apply `patch` by media type; 415 for types the server does not serve."""
    media = content_type.split(";")[0].strip().lower()
    if media == MERGE_PATCH:
        return _require_object(merge_patch(target, _require_object(patch)))
    if media in (STRATEGIC_MERGE_PATCH, APPLY_PATCH):
        return _require_object(strategic_merge_patch(target, _require_object(patch)))
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json patch must be a list of operations")
        return _require_object(json_patch(target, patch))
    raise unsupported_media_type(media)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Merge patch, except lists with a merge key merge item by item (`$patch: delete` too)."""
    if isinstance(patch, list) and field in MERGE_KEYS and isinstance(target, list):
        return _merge_list(target, patch, MERGE_KEYS[field])
    if not isinstance(patch, dict):
        return patch
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value, key)
    return result


def _merge_list(target: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    result = list(target)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise bad_request(f"map item in patch lacks merge key {merge_key!r}")
        index = next(
            (i for i, old in enumerate(result) if old.get(merge_key) == item[merge_key]), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def json_patch(target: JsonObj, operations: list[Any]) -> Any:
    """RFC 6902 on a deep copy; a failed `test` or a missing path is 422 as apiserver answers."""
    document: Any = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise bad_request(f"invalid json patch operation: {operation!r}")
        document = _apply_operation(document, operation)
    return document


def _apply_operation(document: Any, operation: JsonObj) -> Any:
    op, path = operation["op"], _pointer(operation["path"])
    if op == "test":
        if _get(document, path) != operation.get("value"):
            raise _patch_failed(f"testing value {operation['path']} failed")
        return document
    if op in ("move", "copy"):
        value = _get(document, _pointer(operation.get("from", "")))
        if op == "move":
            document = _remove(document, _pointer(operation["from"]))
        return _add(document, path, copy.deepcopy(value))
    if op == "remove":
        return _remove(document, path)
    if op == "replace":
        _get(document, path)
        return _add(_remove(document, path), path, operation.get("value"))
    if op == "add":
        return _add(document, path, operation.get("value"))
    raise bad_request(f"unsupported json patch operation {op!r}")


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise bad_request(f"invalid json pointer {text!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in text[1:].split("/")]


def _get(document: Any, path: list[str]) -> Any:
    for part in path:
        document = _child(document, part)
    return document


def _child(container: Any, part: str) -> Any:
    try:
        if isinstance(container, list):
            return container[int(part)]
        return container[part]
    except (KeyError, IndexError, ValueError, TypeError):
        raise _patch_failed(f"path segment {part!r} does not exist") from None


def _add(document: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent, last = _get(document, path[:-1]), path[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else _index(parent, last, allow_end=True)
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise _patch_failed(f"cannot add {last!r} to a scalar")
    return document


def _remove(document: Any, path: list[str]) -> Any:
    if not path:
        raise _patch_failed("cannot remove the whole document")
    parent, last = _get(document, path[:-1]), path[-1]
    if isinstance(parent, list):
        del parent[_index(parent, last, allow_end=False)]
    elif isinstance(parent, dict) and last in parent:
        del parent[last]
    else:
        raise _patch_failed(f"path segment {last!r} does not exist")
    return document


def _index(items: list[Any], part: str, *, allow_end: bool) -> int:
    limit = len(items) + (1 if allow_end else 0)
    if not part.isdigit() or int(part) >= limit:
        raise _patch_failed(f"array index {part!r} out of range")
    return int(part)


def _require_object(value: Any) -> JsonObj:
    if not isinstance(value, dict):
        raise bad_request("patch must produce a JSON object")
    return value


def _patch_failed(message: str) -> ApiError:
    return ApiError(422, "Invalid", f"the server rejected our request: {message}")
