"""PodSpecBuilder: template -> override -> request -> identity -> hook -> policy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import pods
from pipeline.config import load_settings
from pipeline.launcher.builder import PodSpecBuilder, load_hook, valid_label_key
from pipeline.launcher.errors import PodRejected
from pipeline.launcher.merge import JsonObj
from pipeline.launcher.policy import SecurityPolicy
from pipeline.launcher.template import TemplateLibrary
from pipeline.messages import TaskKey, make_request

KEY = TaskKey("etl", "extract", "manual__2026-01-01", -1, 1)
ARGV = ["airflow", "tasks", "run", "etl", "extract", "manual__2026-01-01"]


def builder(**options: Any) -> PodSpecBuilder:
    return PodSpecBuilder(
        TemplateLibrary(),
        SecurityPolicy(allowed_commands=[["airflow", "tasks", "run"]]),
        namespace="jobs",
        instance="launcher-0",
        worker_image="python:3.12-slim",
        **options,
    )


def request(key: TaskKey = KEY, **optional: Any) -> Any:
    return make_request(key, list(ARGV), "kubernetes", **optional)


def base(pod: JsonObj) -> JsonObj:
    container: JsonObj = pod["spec"]["containers"][0]
    return container


def test_default_pod_runs_the_request() -> None:
    pod = builder().build(request(env={"X": "1"}))
    assert pod["metadata"]["name"] == pods.pod_name(KEY)
    assert pod["metadata"]["namespace"] == "jobs"
    assert pod["metadata"]["labels"] == pods.pod_labels(KEY, "launcher-0")
    assert pods.key_from_annotations(pod["metadata"]["annotations"]) == KEY
    assert pod["spec"]["restartPolicy"] == "Never"
    assert base(pod)["name"] == "base"
    assert base(pod)["image"] == "python:3.12-slim"
    assert base(pod)["command"] == ARGV
    assert "args" not in base(pod)
    assert base(pod)["env"] == [{"name": "X", "value": "1"}]


def test_override_is_merged_and_request_fields_win() -> None:
    override = {
        "metadata": {"labels": {"team": "data"}, "annotations": {"note": "x"}},
        "spec": {
            "containers": [
                {
                    "name": "base",
                    "image": "python:3.11",
                    "args": ["--ignored"],
                    "resources": {"limits": {"memory": "256Mi"}},
                }
            ]
        },
    }
    pod = builder().build(
        request(image="python:3.13", executor_config={"pod_override": override}, labels={"a": "b"})
    )
    assert base(pod)["image"] == "python:3.13"
    assert base(pod)["command"] == ARGV and "args" not in base(pod)
    assert base(pod)["resources"] == {"limits": {"memory": "256Mi"}}
    assert pod["metadata"]["labels"]["team"] == "data"
    assert pod["metadata"]["labels"]["a"] == "b"
    assert pod["metadata"]["annotations"]["note"] == "x"


def test_override_image_is_kept_when_the_request_names_none() -> None:
    override = {"spec": {"containers": [{"name": "base", "image": "python:3.11"}]}}
    pod = builder().build(request(executor_config={"pod_override": override}))
    assert base(pod)["image"] == "python:3.11"


def test_override_cannot_change_the_identity() -> None:
    override = {
        "metadata": {
            "name": "mine",
            "namespace": "kube-system",
            "generateName": "x-",
            "labels": {pods.MANAGED_LABEL: "false"},
        }
    }
    pod = builder().build(request(executor_config={"pod_override": override}))
    assert pod["metadata"]["name"] == pods.pod_name(KEY)
    assert pod["metadata"]["namespace"] == "jobs"
    assert "generateName" not in pod["metadata"]
    assert pod["metadata"]["labels"][pods.MANAGED_LABEL] == "true"


def test_long_user_label_values_are_made_label_safe() -> None:
    pod = builder().build(request(labels={"owner": "x" * 200}))
    value = pod["metadata"]["labels"]["owner"]
    assert len(value) <= 63


@pytest.mark.parametrize("name", ["bad key", "-x", "a/b/c", "UPPER.example/x", "x" * 64])
def test_invalid_label_keys_fail_the_task(name: str) -> None:
    with pytest.raises(PodRejected, match="invalid label key"):
        builder().build(request(labels={name: "v"}))


def test_label_keys_in_the_project_domain_are_reserved() -> None:
    with pytest.raises(PodRejected, match="invalid label key"):
        builder().build(request(labels={f"{pods.DOMAIN}/dag-id": "other"}))


def test_valid_label_keys() -> None:
    assert valid_label_key("app.kubernetes.io/name")
    assert valid_label_key("team")
    assert not valid_label_key("")


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ({"metadata": "oops"}, "metadata must be an object, not str"),
        ({"metadata": {"labels": ["a"]}}, "metadata.labels must be an object, not list"),
        ({"spec": {"containers": 5}}, "spec.containers must be a list, not int"),
        ({"spec": {"containers": [1]}}, r"spec.containers\[0\] must be an object, not int"),
        (
            {"spec": {"containers": [{"name": "base", "env": 5}]}},
            r"spec.containers\[0\].env must be a list, not int",
        ),
        ({"spec": {"volumes": {"name": "v"}}}, "spec.volumes must be a list, not dict"),
        ({"spec": "oops"}, "spec must be an object, not str"),
        (["spec"], "pod_override must be an object, not list"),
    ],
)
def test_malformed_overrides_fail_the_task_naming_the_field(override: Any, says: str) -> None:
    with pytest.raises(PodRejected, match=f"^invalid pod_override: {says}$"):
        builder().build(request(executor_config={"pod_override": override}))


def test_unknown_named_template_fails_the_task() -> None:
    with pytest.raises(PodRejected, match="unknown pod template 'gpu'"):
        builder().build(request(pod_template="gpu"))


def add_toleration(pod: JsonObj) -> None:
    pod["spec"]["tolerations"] = [{"key": "batch", "operator": "Exists"}]
    pod["metadata"]["name"] = "renamed-by-hook"


def privileged(pod: JsonObj) -> JsonObj:
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    return pod


def explode(pod: JsonObj) -> None:
    raise RuntimeError("no quota for team data")


def test_hook_runs_after_everything_but_cannot_rename() -> None:
    pod = builder(hook=add_toleration).build(request())
    assert pod["spec"]["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert pod["metadata"]["name"] == pods.pod_name(KEY)


def test_a_raising_hook_fails_the_task_with_its_reason() -> None:
    with pytest.raises(PodRejected, match="pod mutation hook failed: RuntimeError: no quota"):
        builder(hook=explode).build(request())


def test_a_hook_returning_garbage_fails_the_task() -> None:
    with pytest.raises(PodRejected, match="returned list"):
        builder(hook=lambda pod: [pod]).build(request())  # type: ignore[arg-type,return-value]


def test_policy_sees_what_the_hook_did() -> None:
    with pytest.raises(PodRejected, match=r"security policy: .*privileged"):
        builder(hook=privileged).build(request())


def test_policy_refuses_commands_outside_the_allowlist() -> None:
    bad = make_request(KEY, ["bash", "-c", "id"], "kubernetes")
    with pytest.raises(PodRejected, match=r"security policy: .*command not allowed"):
        builder().build(bad)


def test_policy_refuses_host_path_from_an_override() -> None:
    override = {"spec": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}
    with pytest.raises(PodRejected, match="hostPath"):
        builder().build(request(executor_config={"pod_override": override}))


def test_load_hook() -> None:
    assert load_hook("copy:deepcopy")({"a": 1}) == {"a": 1}
    for spec, message in [
        ("copy", "module:function"),
        ("no.such.module:f", "cannot load"),
        ("copy:nothing", "cannot load"),
        ("copy:__name__", "not callable"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_hook(spec)


def test_from_settings_reads_templates_hook_and_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_LAUNCHER_POD_MUTATION_HOOK", "copy:copy")
    monkeypatch.setenv("PIPELINE_KUBE_NAMESPACE", "batch")
    built = PodSpecBuilder.from_settings(load_settings(), "i-1")
    assert built.namespace == "batch" and built.hook is not None
    pod = built.build(request())
    assert pod["metadata"]["namespace"] == "batch"


text = st.text(min_size=1, max_size=80)
keys = st.builds(TaskKey, text, text, text, st.integers(-1, 10), st.integers(0, 10))


@settings(max_examples=50)
@given(key=keys)
def test_build_is_deterministic_and_round_trips_the_key(key: TaskKey) -> None:
    first = builder().build(request(key))
    assert first == builder().build(request(key))
    assert pods.key_from_annotations(first["metadata"]["annotations"]) == key
