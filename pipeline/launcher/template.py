"""Pod templates: the base every worker pod starts from (Airflow's `pod_template_file`).

The default template comes from `launcher.pod_template_file`, or the built-in one below. A
request may name another template (`pod_template`), looked up as `<name>.yaml` in
`launcher.pod_template_dir`; only operators put files there, so a request picks among
vetted bases and never points at an arbitrary path.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Final

import yaml

from pipeline.launcher.merge import JsonObj, json_copy

BASE_CONTAINER: Final = "base"

DEFAULT_TEMPLATE: Final[JsonObj] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {},
    "spec": {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": BASE_CONTAINER,
                "imagePullPolicy": "IfNotPresent",
                "securityContext": {"allowPrivilegeEscalation": False},
            }
        ],
    },
}

_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class TemplateError(ValueError):
    """A template that cannot be used: unreadable, not a pod, or not known."""


def parse_template(text: str, origin: str) -> JsonObj:
    """A pod template from YAML text; `origin` names it in errors."""
    try:
        loaded: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TemplateError(f"pod template {origin} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise TemplateError(f"pod template {origin} must be a mapping (a Pod)")
    if loaded.get("kind", "Pod") != "Pod":
        raise TemplateError(f"pod template {origin} has kind {loaded['kind']!r}, expected Pod")
    for section in ("metadata", "spec"):
        if not isinstance(loaded.get(section) or {}, dict):
            raise TemplateError(f"pod template {origin}: {section} must be a mapping")
    containers = (loaded.get("spec") or {}).get("containers") or []
    if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
        raise TemplateError(f"pod template {origin}: spec.containers must be a list of mappings")
    try:
        template: JsonObj = json_copy(loaded)
    except TypeError as exc:
        raise TemplateError(f"pod template {origin} is not plain JSON data: {exc}") from None
    return template


def load_template(path: Path) -> JsonObj:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TemplateError(f"cannot read pod template {path}: {exc.strerror or exc}") from None
    return parse_template(text, str(path))


class TemplateLibrary:
    """The default template plus named ones, each read once and handed out as a copy."""

    def __init__(self, default_file: Path | None = None, directory: Path | None = None) -> None:
        self._default = load_template(default_file) if default_file else DEFAULT_TEMPLATE
        if directory is not None and not directory.is_dir():
            raise TemplateError(f"pod template directory {directory} does not exist")
        self._directory = directory
        self._named: dict[str, JsonObj] = {}

    def get(self, name: str | None = None) -> JsonObj:
        """A fresh copy of the named template, or of the default when `name` is None."""
        return copy.deepcopy(self.shared(name))

    def shared(self, name: str | None = None) -> JsonObj:
        """The template itself, for readers that never modify it (saves a copy per pod)."""
        return self._default if name is None else self._lookup(name)

    def _lookup(self, name: str) -> JsonObj:
        if name in self._named:
            return self._named[name]
        if self._directory is None or not _TEMPLATE_NAME.match(name):
            raise TemplateError(f"unknown pod template {name!r}")
        for suffix in (".yaml", ".yml"):
            path = self._directory / f"{name}{suffix}"
            if path.is_file():
                self._named[name] = load_template(path)
                return self._named[name]
        raise TemplateError(f"unknown pod template {name!r}")
