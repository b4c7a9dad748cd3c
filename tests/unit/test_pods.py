"""Pod identity: names and labels within Kubernetes limits, keys recovered exactly."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from pipeline import pods
from pipeline.messages import TaskKey

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

text = st.text(min_size=1, max_size=300)
keys = st.builds(TaskKey, text, text, text, st.integers(-1, 100_000), st.integers(0, 1000))


@given(key=keys)
def test_pod_name_is_a_dns_label_and_deterministic(key: TaskKey) -> None:
    name = pods.pod_name(key)
    assert len(name) <= 63
    assert DNS1123_LABEL.match(name), name
    assert pods.pod_name(TaskKey(*key.to_wire().values())) == name


@given(key=keys)
def test_pod_name_differs_per_try(key: TaskKey) -> None:
    retry = TaskKey(key.dag_id, key.task_id, key.run_id, key.map_index, key.try_number + 1)
    assert pods.pod_name(retry) != pods.pod_name(key)


def test_pod_name_keeps_a_readable_prefix() -> None:
    name = pods.pod_name(TaskKey("ETL_Daily", "extract.users", "manual__1", -1, 2))
    assert name.startswith("etl-daily-extract-users-2-")


@given(key=keys, instance=text)
def test_labels_are_valid_label_values(key: TaskKey, instance: str) -> None:
    for value in pods.pod_labels(key, instance).values():
        assert len(value) <= 63
        assert LABEL_VALUE.match(value), value


@given(a=text, b=text)
def test_distinct_values_keep_distinct_labels(a: str, b: str) -> None:
    if a != b:
        assert pods.safe_label_value(a) != pods.safe_label_value(b)


def test_short_clean_values_are_kept_as_they_are() -> None:
    assert pods.safe_label_value("extract_users-1.2") == "extract_users-1.2"


@given(key=keys)
def test_annotations_round_trip_the_exact_key(key: TaskKey) -> None:
    assert pods.key_from_annotations(pods.pod_annotations(key)) == key


def test_pods_without_our_annotations_have_no_key() -> None:
    assert pods.key_from_annotations(None) is None
    assert pods.key_from_annotations({"app": "web"}) is None
    broken = pods.pod_annotations(TaskKey("d", "t", "r")) | {"pipeline.dev/try_number": "x"}
    assert pods.key_from_annotations(broken) is None


def test_selector_names_the_managed_label_and_optionally_the_instance() -> None:
    assert pods.managed_selector() == "pipeline.dev/managed=true"
    assert pods.managed_selector("a b") == (
        f"pipeline.dev/managed=true,pipeline.dev/instance={pods.safe_label_value('a b')}"
    )
