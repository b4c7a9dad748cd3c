"""PodSpecBuilder: one task request in, the exact pod to create out (pure, no I/O).

Order, as in Airflow's `construct_pod` plus our guards: the pod template, then the request's
`executor_config.pod_override` (Airflow's reconcile semantics), then what the request itself
says (image, argv, env, labels), then the task identity (name, labels, annotations), then the
mutation hook, then the security policy. The identity is stamped again after the hook: the
deterministic name is what makes a re-delivered request a harmless 409, so no hook may
change it. Any step that refuses the pod raises PodRejected with the reason the task fails with.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from pipeline.config import Settings
from pipeline.launcher.errors import PodRejected
from pipeline.launcher.merge import JsonObj, extend_list, reconcile_pod
from pipeline.launcher.policy import SecurityPolicy
from pipeline.launcher.template import BASE_CONTAINER, TemplateError, TemplateLibrary
from pipeline.messages import TaskKey, TaskRequest
from pipeline.pods import DOMAIN, pod_annotations, pod_labels, pod_name, safe_label_value

MutationHook = Callable[[JsonObj], JsonObj | None]

_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def load_hook(spec: str) -> MutationHook:
    """Import a `module:function` mutation hook; ValueError says why it cannot be used."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"pod mutation hook must be 'module:function', got {spec!r}")
    try:
        hook = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load pod mutation hook {spec!r}: {exc}") from None
    if not callable(hook):
        raise ValueError(f"pod mutation hook {spec!r} is not callable")
    result: MutationHook = hook
    return result


def valid_label_key(key: str) -> bool:
    prefix, sep, name = key.rpartition("/")
    if sep and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(_LABEL_NAME.match(name))


class PodSpecBuilder:
    """Builds worker pods for one launcher instance."""

    def __init__(
        self,
        templates: TemplateLibrary,
        policy: SecurityPolicy,
        *,
        namespace: str,
        instance: str,
        worker_image: str,
        hook: MutationHook | None = None,
    ) -> None:
        self.templates = templates
        self.policy = policy
        self.namespace = namespace
        self.instance = instance
        self.worker_image = worker_image
        self.hook = hook

    @classmethod
    def from_settings(cls, settings: Settings, instance: str) -> PodSpecBuilder:
        """Raises ValueError (TemplateError included) when templates or the hook are unusable."""
        launcher = settings.launcher
        hook = load_hook(launcher.pod_mutation_hook) if launcher.pod_mutation_hook else None
        return cls(
            TemplateLibrary(launcher.pod_template_file, launcher.pod_template_dir),
            SecurityPolicy.from_settings(settings.security),
            namespace=settings.kube.namespace,
            instance=instance,
            worker_image=launcher.worker_image,
            hook=hook,
        )

    def build(self, request: TaskRequest) -> JsonObj:
        """The pod for `request`; raises PodRejected when it must not be created."""
        key = TaskKey.from_wire(request["key"])
        pod = self._merged(request)
        self._apply_request(pod, request)
        self._stamp_identity(pod, key)
        if self.hook is not None:
            pod = self._mutate(pod)
            self._stamp_identity(pod, key)
        if reason := self.policy.violation(pod):
            raise PodRejected(f"security policy: {reason}")
        return pod

    def _merged(self, request: TaskRequest) -> JsonObj:
        try:
            template = self.templates.shared(request.get("pod_template"))
        except TemplateError as exc:
            raise PodRejected(str(exc)) from None
        override = (request.get("executor_config") or {}).get("pod_override")
        try:
            return reconcile_pod(template, override)
        except (TypeError, AttributeError, KeyError) as exc:
            raise PodRejected(f"invalid pod_override: {exc}") from None

    def _apply_request(self, pod: JsonObj, request: TaskRequest) -> None:
        spec = _mapping(pod, "spec")
        spec.setdefault("restartPolicy", "Never")
        base = _base_container(spec)
        base["image"] = request.get("image") or base.get("image") or self.worker_image
        base["command"] = list(request["command"])
        base.pop("args", None)
        if env := request.get("env"):
            extra = [{"name": name, "value": value} for name, value in env.items()]
            base["env"] = extend_list(base.get("env"), extra)
        labels = _mapping(_mapping(pod, "metadata"), "labels")
        for name, value in (request.get("labels") or {}).items():
            if not valid_label_key(name) or name.startswith(f"{DOMAIN}/"):
                raise PodRejected(f"invalid label key {name!r}")
            labels[name] = safe_label_value(value)

    def _stamp_identity(self, pod: JsonObj, key: TaskKey) -> None:
        metadata = _mapping(pod, "metadata")
        metadata.pop("generateName", None)
        metadata["name"] = pod_name(key)
        metadata["namespace"] = self.namespace
        _mapping(metadata, "labels").update(pod_labels(key, self.instance))
        _mapping(metadata, "annotations").update(pod_annotations(key))

    def _mutate(self, pod: JsonObj) -> JsonObj:
        assert self.hook is not None
        try:
            result = self.hook(pod)
        except Exception as exc:  # the hook is user code: any failure fails this task only
            raise PodRejected(f"pod mutation hook failed: {type(exc).__name__}: {exc}") from None
        if result is None:
            return pod
        if not isinstance(result, dict):
            raise PodRejected(f"pod mutation hook returned {type(result).__name__}, not a pod")
        return result


def _mapping(parent: JsonObj, name: str) -> JsonObj:
    """`parent[name]` as a dict, created when missing; PodRejected when it is something else."""
    value: Any = parent.get(name)
    if value is None:
        value = parent[name] = {}
    if not isinstance(value, dict):
        raise PodRejected(f"{name} must be an object, got {type(value).__name__}")
    return value


def _base_container(spec: JsonObj) -> JsonObj:
    containers: Any = spec.get("containers")
    if containers is None:
        containers = spec["containers"] = []
    if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
        raise PodRejected("spec.containers must be a list of objects")
    named: list[JsonObj] = [c for c in containers if c.get("name") == BASE_CONTAINER]
    if named:
        return named[0]
    if containers:  # Airflow's rule: the first container is the one the task runs in
        first: JsonObj = containers[0]
        return first
    base: JsonObj = {"name": BASE_CONTAINER}
    containers.insert(0, base)
    return base
