"""The security policy every pod passes before it is created (deny by default).

It runs after the mutation hook, on the pod exactly as it would be sent, so neither a
request's `pod_override`, a template nor the hook can smuggle in what operators did not
allow. Every container counts (init and ephemeral ones too): each must run an allowlisted
argv, as a container without a command would run whatever its image's entrypoint is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config import SecuritySettings
from pipeline.launcher.merge import JsonObj
from pipeline.security import command_violation

_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
_HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
_DEFAULT_REGISTRY = "docker.io"


@dataclass(frozen=True)
class SecurityPolicy:
    allowed_commands: Sequence[Sequence[str]]
    allowed_image_registries: Sequence[str] = ()
    allow_privileged: bool = False
    allow_host_path: bool = False
    allow_host_namespaces: bool = False

    @classmethod
    def from_settings(cls, security: SecuritySettings) -> SecurityPolicy:
        return cls(
            allowed_commands=security.allowed_commands,
            allowed_image_registries=security.allowed_image_registries,
            allow_privileged=security.allow_privileged,
            allow_host_path=security.allow_host_path,
            allow_host_namespaces=security.allow_host_namespaces,
        )

    def violation(self, pod: JsonObj) -> str | None:
        """Why `pod` may not be created, or None when it may."""
        spec = pod.get("spec") or {}
        if not self.allow_host_namespaces:
            for field in _HOST_NAMESPACES:
                if spec.get(field):
                    return f"spec.{field} is not allowed"
        if not self.allow_host_path:
            for volume in spec.get("volumes") or []:
                if isinstance(volume, dict) and "hostPath" in volume:
                    return f"hostPath volume {volume.get('name')!r} is not allowed"
        for where, container in _containers(spec):
            if reason := self._container_violation(container):
                return f"{where}: {reason}"
        return None

    def _container_violation(self, container: JsonObj) -> str | None:
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if reason := command_violation(argv, self.allowed_commands):
            return reason
        if not self.allow_privileged:
            context = container.get("securityContext") or {}
            if context.get("privileged"):
                return "privileged containers are not allowed"
            if context.get("allowPrivilegeEscalation"):
                return "allowPrivilegeEscalation is not allowed"
        image = container.get("image")
        if self.allowed_image_registries and not image_allowed(
            str(image or ""), self.allowed_image_registries
        ):
            return f"image {image!r} is not from an allowed registry"
        return None


def _containers(spec: JsonObj) -> Iterator[tuple[str, JsonObj]]:
    for field in _CONTAINER_LISTS:
        for i, container in enumerate(spec.get(field) or []):
            shaped = container if isinstance(container, dict) else {}
            yield f"{field}[{i}] {_name(container)!r}", shaped


def _name(container: Any) -> str:
    return str(container.get("name")) if isinstance(container, dict) else "?"


def normalize_image(image: str) -> str:
    """The full reference: `python:3.12` -> `docker.io/library/python:3.12`."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"{_DEFAULT_REGISTRY}/{image}" if sep else f"{_DEFAULT_REGISTRY}/library/{image}"


def image_allowed(image: str, allowed: Sequence[str]) -> bool:
    """True when the image lies under one of the allowed prefixes, on a path boundary.

    `ghcr.io/acme` allows `ghcr.io/acme/job:1` but not `ghcr.io/acme-evil/job:1`, and
    `docker.io` allows `python:3.12` (a short name means Docker Hub, as for the runtime).
    """
    if not image:
        return False
    full = normalize_image(image)
    for prefix in allowed:
        stem = prefix.rstrip("/")
        if stem and (full == stem or full.startswith(stem + "/")):
            return True
    return False
