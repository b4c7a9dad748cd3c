"""A pod mutation hook for the tests, loaded by `module:function` like an operator's would be."""

from __future__ import annotations

from typing import Any


def refuse_forbidden(pod: dict[str, Any]) -> None:
    """Refuse one DAG, mark every other pod: the hook runs on each and may fail just one."""
    annotations = pod["metadata"]["annotations"]
    if annotations.get("pipeline.dev/dag_id") == "forbidden":
        raise PermissionError("dag forbidden may not run here")
    annotations["hooked"] = "yes"
