"""pod_override over the template: Airflow's reconcile semantics, containers by name."""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st

from pipeline.launcher.merge import extend_list, reconcile_pod

BASE = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"labels": {"team": "core", "tier": "batch"}, "annotations": {"a": "1"}},
    "spec": {
        "restartPolicy": "Never",
        "serviceAccountName": "worker",
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "containers": [
            {
                "name": "base",
                "image": "python:3.12",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "500m"}},
                "volumeMounts": [{"name": "scratch", "mountPath": "/tmp/s"}],
            },
            {"name": "sidecar", "image": "busybox", "command": ["sleep", "inf"]},
        ],
    },
}


def test_no_override_returns_an_equal_copy() -> None:
    merged = reconcile_pod(BASE, None)
    assert merged == BASE
    assert merged is not BASE
    assert merged["spec"]["containers"][0] is not BASE["spec"]["containers"][0]


def test_metadata_maps_merge_with_override_winning() -> None:
    merged = reconcile_pod(BASE, {"metadata": {"labels": {"tier": "gpu", "new": "x"}}})
    assert merged["metadata"]["labels"] == {"team": "core", "tier": "gpu", "new": "x"}
    assert merged["metadata"]["annotations"] == {"a": "1"}


def test_containers_merge_by_name_and_extend_the_base_containers_lists() -> None:
    override = {
        "spec": {
            "containers": [
                {"name": "sidecar", "image": "busybox:1.36"},
                {
                    "name": "base",
                    "env": [{"name": "C", "value": "3"}],
                    "resources": {"limits": {"memory": "256Mi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                },
            ]
        }
    }
    merged = reconcile_pod(BASE, override)
    base, sidecar = merged["spec"]["containers"]
    assert base["image"] == "python:3.12"
    assert [e["name"] for e in base["env"]] == ["A", "B", "C"]
    assert [m["name"] for m in base["volumeMounts"]] == ["scratch", "data"]
    # Non-list fields are replaced whole, as in Airflow's merge_objects.
    assert base["resources"] == {"limits": {"memory": "256Mi"}}
    assert sidecar == {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "inf"]}


def test_an_override_entry_replaces_its_namesake_instead_of_duplicating() -> None:
    override = {"spec": {"containers": [{"name": "base", "env": [{"name": "A", "value": "9"}]}]}}
    env = reconcile_pod(BASE, override)["spec"]["containers"][0]["env"]
    assert env == [{"name": "B", "value": "2"}, {"name": "A", "value": "9"}]


def test_new_containers_are_appended_and_unnamed_ones_target_the_base() -> None:
    override = {
        "spec": {
            "containers": [
                {"image": "python:3.13"},
                {"name": "logger", "image": "fluent-bit"},
            ]
        }
    }
    containers = reconcile_pod(BASE, override)["spec"]["containers"]
    assert [c["name"] for c in containers] == ["base", "sidecar", "logger"]
    assert containers[0]["image"] == "python:3.13"


def test_spec_volumes_and_init_containers_extend_other_fields_replace() -> None:
    override = {
        "spec": {
            "serviceAccountName": "etl",
            "volumes": [{"name": "data", "configMap": {"name": "cfg"}}],
            "initContainers": [{"name": "init", "image": "busybox"}],
            "nodeSelector": {"disk": "ssd"},
        }
    }
    spec = reconcile_pod(BASE, override)["spec"]
    assert spec["serviceAccountName"] == "etl"
    assert [v["name"] for v in spec["volumes"]] == ["scratch", "data"]
    assert spec["initContainers"] == [{"name": "init", "image": "busybox"}]
    assert spec["nodeSelector"] == {"disk": "ssd"}
    assert spec["restartPolicy"] == "Never"


def test_unset_override_values_keep_the_base_but_false_is_a_value() -> None:
    base = {"spec": {"hostname": "h", "automountServiceAccountToken": True}}
    override = {"spec": {"hostname": None, "automountServiceAccountToken": False}}
    spec = reconcile_pod(base, override)["spec"]
    assert spec == {"hostname": "h", "automountServiceAccountToken": False}


def test_override_on_an_empty_template_is_taken_as_is() -> None:
    override = {"metadata": {"labels": {"x": "y"}}, "spec": {"containers": [{"name": "c"}]}}
    assert reconcile_pod({}, override) == override


def test_inputs_are_not_modified() -> None:
    base, override = copy.deepcopy(BASE), {"spec": {"containers": [{"name": "base", "env": []}]}}
    before = copy.deepcopy(override)
    reconcile_pod(base, override)
    assert base == BASE
    assert override == before


names = st.sampled_from(["a", "b", "c", "d"])
entries = st.lists(st.fixed_dictionaries({"name": names, "value": st.text(max_size=3)}))


@given(base=entries, override=entries)
def test_extend_keeps_every_override_entry_and_every_unshadowed_base_entry(
    base: list[dict[str, str]], override: list[dict[str, str]]
) -> None:
    combined = extend_list(base, override)
    shadowed = {e["name"] for e in override}
    assert combined[len(combined) - len(override) :] == override
    assert combined[: len(combined) - len(override)] == [
        e for e in base if e["name"] not in shadowed
    ]
