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


def container(**fields: object) -> dict[str, object]:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", **fields}]}}


@pytest.mark.parametrize(
    ("pod", "wrong"),
    [
        (
            container(command="echo hi"),
            "string into Go struct field Container.spec.containers.command of type []string",
        ),
        (
            container(env=[{"name": "N", "value": 5}]),
            "number into Go struct field EnvVar.spec.containers.env.value of type string",
        ),
        (
            {"metadata": {"name": "p"}, "spec": ["not", "a", "spec"]},
            "array into Go struct field Pod.spec of type v1.PodSpec",
        ),
        (
            {"metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": 1.5}},
            "number into Go struct field PodSpec.spec.terminationGracePeriodSeconds of type int64",
        ),
        (
            {"metadata": {"name": "p"}, "spec": {"hostNetwork": "yes"}},
            "string into Go struct field PodSpec.spec.hostNetwork of type bool",
        ),
    ],
)
def test_a_value_of_the_wrong_type_cannot_be_decoded_in_any_mode(
    pod: dict[str, object], wrong: str
) -> None:
    with pytest.raises(ApiError) as raised:
        decode(pod, POD, "Pod", "Ignore")
    assert raised.value.code == 400
    assert raised.value.message == (
        f'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal {wrong}'
    )


def test_numbers_are_quantities_and_int_or_strings_and_null_is_any_type() -> None:
    resources = {"limits": {"cpu": 1, "memory": "64Mi"}, "requests": {"cpu": 0.5}}
    probe = {"httpGet": {"port": 8080, "path": "/"}, "tcpSocket": None}
    pod = container(image="i", resources=resources, livenessProbe=probe, args=None)
    pruned, _ = decode(pod, POD, "Pod", "Strict")
    assert pruned == pod
