"""Patch formats: merge patch, strategic merge patch, JSON patch; inputs stay untouched."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline.sandbox.kube.patch import apply_patch
from pipeline.sandbox.kube.status import ApiError

POD: dict[str, Any] = {
    "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
    "spec": {"containers": [{"name": "base", "image": "x:1"}, {"name": "side", "image": "y:1"}]},
}


def test_merge_patch_sets_and_removes_labels_without_touching_the_input() -> None:
    before = copy.deepcopy(POD)
    patch = {"metadata": {"labels": {"a": None, "c": "3"}}}
    result = apply_patch("application/merge-patch+json", POD, patch)
    assert result["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert before == POD


def test_merge_patch_replaces_lists() -> None:
    patch = {"spec": {"containers": [{"name": "base", "image": "x:2"}]}}
    result = apply_patch("application/merge-patch+json", POD, patch)
    assert result["spec"]["containers"] == [{"name": "base", "image": "x:2"}]


def test_strategic_merge_patch_merges_containers_by_name() -> None:
    patch = {"spec": {"containers": [{"name": "side", "image": "y:2"}]}}
    result = apply_patch("application/strategic-merge-patch+json", POD, patch)
    assert [c["image"] for c in result["spec"]["containers"]] == ["x:1", "y:2"]


def test_strategic_merge_patch_delete_directive() -> None:
    patch = {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}
    result = apply_patch("application/strategic-merge-patch+json", POD, patch)
    assert [c["name"] for c in result["spec"]["containers"]] == ["base"]


def test_json_patch_operations() -> None:
    ops = [
        {"op": "test", "path": "/metadata/labels/a", "value": "1"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "9"},
        {"op": "add", "path": "/metadata/labels/x~1y", "value": "z"},
        {"op": "remove", "path": "/metadata/labels/b"},
        {"op": "copy", "from": "/spec/containers/0", "path": "/spec/containers/-"},
    ]
    result = apply_patch("application/json-patch+json", POD, ops)
    assert result["metadata"]["labels"] == {"a": "9", "x/y": "z"}
    assert len(result["spec"]["containers"]) == 3
    assert len(POD["spec"]["containers"]) == 2


def test_failed_json_patch_test_is_422() -> None:
    with pytest.raises(ApiError) as raised:
        apply_patch(
            "application/json-patch+json",
            POD,
            [{"op": "test", "path": "/metadata/name", "value": "q"}],
        )
    assert raised.value.code == 422


def test_an_apply_merges_as_a_strategic_merge_patch() -> None:
    applied = {"metadata": {"labels": {"tier": "batch"}}}
    assert apply_patch("application/apply-patch+yaml", POD, applied) == apply_patch(
        "application/strategic-merge-patch+json", POD, applied
    )


def test_a_media_type_apiserver_does_not_take_for_a_patch_is_415() -> None:
    with pytest.raises(ApiError) as raised:
        apply_patch("application/yaml", POD, {})
    assert raised.value.code == 415
