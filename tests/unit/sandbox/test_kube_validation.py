"""Pod validation: the 422 causes apiserver would report."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.sandbox.kube.validation import spec_update_errors, validate_pod


def pod(name: str = "ok-name", **spec: Any) -> dict[str, Any]:
    spec = spec or {"containers": [{"name": "base", "image": "busybox"}]}
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


def fields(causes: list[dict[str, Any]]) -> list[str]:
    return [c["field"] for c in causes]


def test_valid_pod_has_no_errors() -> None:
    assert validate_pod(pod()) == []


@pytest.mark.parametrize("name", ["Upper", "under_score", "-lead", "trail-", "a" * 254])
def test_name_must_be_dns1123_subdomain(name: str) -> None:
    assert fields(validate_pod(pod(name))) == ["metadata.name"]


def test_label_key_and_value_syntax() -> None:
    bad = pod()
    bad["metadata"]["labels"] = {"bad key": "v", "ok": "bad value!", "x/": "v"}
    assert fields(validate_pod(bad)) == ["metadata.labels"] * 3


def test_containers_required() -> None:
    causes = validate_pod(pod(containers=[]))
    assert causes == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers"}
    ]


def test_container_image_required_and_names_unique() -> None:
    containers = [{"name": "base", "image": "busybox"}, {"name": "base"}]
    assert fields(validate_pod(pod(containers=containers))) == [
        "spec.containers[1].name",
        "spec.containers[1].image",
    ]


def test_only_images_may_change_in_spec_updates() -> None:
    old = pod()["spec"]
    new_image = {"containers": [{"name": "base", "image": "busybox:2"}]}
    new_command = {"containers": [{"name": "base", "image": "busybox", "command": ["x"]}]}
    assert spec_update_errors(old, new_image) == []
    assert fields(spec_update_errors(old, new_command)) == ["spec"]
