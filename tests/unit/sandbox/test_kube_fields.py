"""Unknown fields: dropped as the Go decoder drops them, reported per fieldValidation."""

from __future__ import annotations

import pytest

from pipeline.sandbox.kube.fields import decode, field_validation
from pipeline.sandbox.kube.status import ApiError

POD = "io.k8s.api.core.v1.Pod"


def body() -> dict[str, object]:
    return {
        "metadata": {"name": "p", "labels": {"any": "key"}, "colour": "red"},
        "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo"}]},
    }


def test_warn_drops_unknown_fields_and_names_them() -> None:
    pruned, warnings = decode(body(), POD, "Pod", "Warn")
    assert warnings == [
        'unknown field "metadata.colour"',
        'unknown field "spec.containers[0].imagee"',
    ]
    assert pruned["metadata"] == {"name": "p", "labels": {"any": "key"}}
    assert pruned["spec"]["containers"] == [{"name": "c", "image": "i"}]


def test_strict_is_a_bad_request_worded_like_apiserver() -> None:
    with pytest.raises(ApiError) as raised:
        decode(body(), POD, "Pod", "Strict")
    assert raised.value.code == 400
    assert raised.value.message.startswith(
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "metadata.colour"'
    )


def test_ignore_drops_silently() -> None:
    pruned, warnings = decode(body(), POD, "Pod", "Ignore")
    assert warnings == [] and "colour" not in pruned["metadata"]


def test_field_validation_defaults_to_warn_and_rejects_other_values() -> None:
    assert field_validation({}) == "Warn"
    with pytest.raises(ApiError):
        field_validation({"fieldValidation": "Loud"})
