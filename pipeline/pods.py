"""How a task's identity is written onto its pod, and read back: the launcher/watcher contract.

Labels are for selecting (63-character, restricted charset, so long values are hashed);
annotations carry the exact values so the task key is recovered without loss (Airflow's
`annotations_to_key`). The pod name is derived from the full key, try included, so a
re-delivered request creates the same name and the API answers 409 instead of a second pod.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Final

import orjson

from pipeline.messages import CancelInfo, TaskKey

DOMAIN: Final = "pipeline.dev"
MANAGED_LABEL: Final = f"{DOMAIN}/managed"
INSTANCE_LABEL: Final = f"{DOMAIN}/instance"
TRY_LABEL: Final = f"{DOMAIN}/try"
"""One value per try (a digest of the whole key), so one selector can name many tries' pods."""
CANCEL_ANNOTATION: Final = f"{DOMAIN}/cancel"
"""Set (to the CancelInfo as JSON) on a pod the launcher deletes because its task was
cancelled, before the delete, so the watcher reports the pod's end as `cancelled`."""
KEY_FIELDS: Final = ("dag_id", "task_id", "run_id", "map_index", "try_number")

_LABEL_MAX = 63
_NAME_MAX = 63
_HASH_LEN = 10
_UNSAFE_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")
_UNSAFE_NAME = re.compile(r"[^a-z0-9-]+")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def safe_label_value(value: str) -> str:
    """A valid label value that stays unique: sanitized, and hashed when it had to change."""
    cleaned = _UNSAFE_LABEL.sub("-", value).strip("-_.")
    if cleaned == value and len(value) <= _LABEL_MAX:
        return value
    suffix = _digest(value, _HASH_LEN)
    head = cleaned[: _LABEL_MAX - _HASH_LEN - 1].rstrip("-_.")
    return f"{head}-{suffix}" if head else suffix


def _full(key: TaskKey) -> str:
    return "\x1f".join(str(part) for part in key.to_wire().values())


def try_label(key: TaskKey) -> str:
    """The TRY_LABEL value of the try's pod: 80 bits of digest, so tries never share one."""
    return _digest(_full(key), 20)


def pod_name(key: TaskKey) -> str:
    """Deterministic DNS-1123 label (<= 63 chars): readable prefix plus a hash of the full key."""
    full = _full(key)
    readable = _UNSAFE_NAME.sub("-", f"{key.dag_id}-{key.task_id}".lower()).strip("-")
    head = readable[: _NAME_MAX - _HASH_LEN - 1 - len(str(key.try_number)) - 1].rstrip("-")
    return f"{head or 'task'}-{key.try_number}-{_digest(full, _HASH_LEN)}"


def pod_labels(key: TaskKey, instance: str) -> dict[str, str]:
    labels = {f"{DOMAIN}/{field.replace('_', '-')}": safe_label_value(str(value))
              for field, value in key.to_wire().items()}  # fmt: skip
    labels[MANAGED_LABEL] = "true"
    labels[INSTANCE_LABEL] = safe_label_value(instance)
    labels[TRY_LABEL] = try_label(key)
    return labels


def pod_annotations(key: TaskKey) -> dict[str, str]:
    return {f"{DOMAIN}/{field}": str(value) for field, value in key.to_wire().items()}


def key_from_annotations(annotations: Mapping[str, str] | None) -> TaskKey | None:
    """The exact task key of a pod this project launched, or None for any other pod."""
    if not annotations:
        return None
    try:
        values = [annotations[f"{DOMAIN}/{field}"] for field in KEY_FIELDS]
        return TaskKey(values[0], values[1], values[2], int(values[3]), int(values[4]))
    except (KeyError, ValueError):
        return None


def cancel_from_annotations(annotations: Mapping[str, str] | None) -> CancelInfo | None:
    """The cancel a pod was ended for, or None when it was not cancelled."""
    raw = (annotations or {}).get(CANCEL_ANNOTATION)
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
        cancel: CancelInfo = {
            "reason": str(value["reason"]),
            "requested_by": str(value["requested_by"]),
            "requested_at": str(value["requested_at"]),
        }
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {"reason": "", "requested_by": "unknown", "requested_at": "1970-01-01T00:00:00Z"}
    return cancel


def managed_selector(instance: str | None = None) -> str:
    """Label selector for the project's pods, optionally of one launcher instance."""
    selector = f"{MANAGED_LABEL}=true"
    return f"{selector},{INSTANCE_LABEL}={safe_label_value(instance)}" if instance else selector
