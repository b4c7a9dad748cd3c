"""The pod store: resourceVersion, bounded history and compaction, index-backed selection."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.sandbox.kube.selectors import parse_selector
from pipeline.sandbox.kube.status import ApiError
from pipeline.sandbox.kube.store import PodStore


def pod(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {},
        "status": {"phase": "Pending"},
    }


def names(pods: list[dict[str, Any]]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def test_every_write_bumps_one_cluster_wide_resource_version() -> None:
    store = PodStore()
    a = store.create(pod("a"))
    b = store.create(pod("b", "other"))
    relabelled = store.replace({**a, "metadata": {**a["metadata"], "labels": {"x": "1"}}})
    gone = store.remove(("other", "b"))
    versions = [p["metadata"]["resourceVersion"] for p in (a, b, relabelled, gone)]
    assert versions == ["2", "3", "4", "5"]
    assert store.rv == 5


def test_duplicate_create_is_409_and_stale_replace_is_conflict() -> None:
    store = PodStore()
    created = store.create(pod("a"))
    with pytest.raises(ApiError) as duplicate:
        store.create(pod("a"))
    store.replace(created)
    with pytest.raises(ApiError) as stale:
        store.replace(created, expected_rv=created["metadata"]["resourceVersion"])
    assert (duplicate.value.reason, stale.value.reason) == ("AlreadyExists", "Conflict")


def test_events_after_returns_exactly_the_later_events() -> None:
    store = PodStore()
    for name in "abcd":
        store.create(pod(name))
    assert [e.rv for e in store.events_after(3)] == [4, 5]


def test_compacted_history_answers_410() -> None:
    store = PodStore(history_size=3)
    for name in "abcde":
        store.create(pod(name))
    assert [e.rv for e in store.events_after(3)] == [4, 5, 6]
    with pytest.raises(ApiError) as raised:
        store.events_after(2)
    assert raised.value.code == 410
    assert raised.value.reason == "Expired"


def test_snapshot_at_undoes_later_changes() -> None:
    store = PodStore()
    store.create(pod("a", app="x"))
    store.create(pod("b"))
    store.remove(("default", "a"))
    store.create(pod("c"))
    assert names(list(store.snapshot_at(3).values())) == ["a", "b"]


def test_select_narrows_by_namespace_label_and_phase() -> None:
    store = PodStore()
    store.create(pod("a", app="web", tier="1"))
    store.create(pod("b", app="web"))
    store.create(pod("c", "other", app="web"))
    store.create(pod("d", app="db"))
    assert names(store.select("default", parse_selector("app=web", None))) == ["a", "b"]
    assert names(store.select(None, parse_selector("app in (web,db),!tier", None))) == [
        "b",
        "d",
        "c",
    ]
    assert names(store.select(None, parse_selector(None, "metadata.name=c"))) == ["c"]
    assert names(store.select("default", parse_selector(None, "status.phase=Pending"))) == [
        "a",
        "b",
        "d",
    ]


operations = st.lists(
    st.tuples(
        st.sampled_from(["create", "relabel", "delete"]),
        st.sampled_from("abcde"),
        st.sampled_from(["x", "y"]),
    ),
    max_size=40,
)


@given(operations, st.sampled_from(["app=x", "app!=x", "app", "!app", "app in (x,y)", ""]))
def test_indexed_select_equals_a_full_scan(ops: list[tuple[str, str, str]], text: str) -> None:
    store = PodStore(history_size=5)
    for op, name, value in ops:
        key = ("default", name)
        exists = key in {
            ("default", n) for n in names(store.select(None, parse_selector("", None)))
        }
        if op == "create" and not exists:
            store.create(pod(name, app=value))
        elif op == "relabel" and exists:
            old = store.get(key)
            store.replace({**old, "metadata": {**old["metadata"], "labels": {"app": value}}})
        elif op == "delete" and exists:
            store.remove(key)
    selector = parse_selector(text, None)
    everything = store.select(None, parse_selector("", None))
    assert store.select(None, selector) == [p for p in everything if selector.matches(p)]
