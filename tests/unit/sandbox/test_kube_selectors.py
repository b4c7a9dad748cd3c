"""Label and field selector grammar and matching, as apiserver parses them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.sandbox.kube.selectors import (
    parse_field_selector,
    parse_label_selector,
    parse_selector,
)
from pipeline.sandbox.kube.status import ApiError


def pod(labels: dict[str, str], phase: str = "Running", name: str = "p") -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "status": {"phase": phase},
    }


def matches(label_selector: str, labels: dict[str, str]) -> bool:
    return parse_selector(label_selector, None).matches(pod(labels))


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("tier in (a, b)", {"tier": "b"}, True),
        ("tier in (a,b)", {"tier": "c"}, False),
        ("tier notin (a,b)", {"tier": "c"}, True),
        ("tier notin (a,b)", {}, True),
        ("tier notin (a,b)", {"tier": "a"}, False),
        ("app", {"app": ""}, True),
        ("app", {}, False),
        ("!app", {}, True),
        ("!app", {"app": "x"}, False),
        ("try>2", {"try": "3"}, True),
        ("try<2", {"try": "3"}, False),
        ("app=web,tier in (a,b),!canary", {"app": "web", "tier": "a"}, True),
        ("app=web,tier in (a,b),!canary", {"app": "web", "tier": "a", "canary": "1"}, False),
        ("example.com/dag-id=my_dag", {"example.com/dag-id": "my_dag"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selector_matches_like_apiserver(
    selector: str, labels: dict[str, str], expected: bool
) -> None:
    assert matches(selector, labels) is expected


@pytest.mark.parametrize(
    "selector", ["app in ()", "app=(x", "a b", "app=has space", "-bad=x", "try>x"]
)
def test_malformed_label_selector_is_400(selector: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_label_selector(selector)
    assert raised.value.code == 400


def test_field_selector_matches_name_namespace_and_phase() -> None:
    selector = parse_selector(
        None, "metadata.name=p,metadata.namespace=default,status.phase!=Failed"
    )
    assert selector.matches(pod({}, phase="Running"))
    assert not selector.matches(pod({}, phase="Failed"))
    assert not selector.matches(pod({}, name="q"))


def test_unsupported_field_is_400() -> None:
    with pytest.raises(ApiError) as raised:
        parse_field_selector("spec.containers=x")
    assert raised.value.code == 400
    assert "field label not supported" in raised.value.message


label_values = st.from_regex(r"[a-z0-9]([a-z0-9]{0,6})?", fullmatch=True)


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), label_values), label_values)
def test_equality_and_inequality_are_complements(labels: dict[str, str], value: str) -> None:
    assert matches(f"a={value}", labels) != matches(f"a!={value}", labels)


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), label_values))
def test_exists_and_not_exists_are_complements(labels: dict[str, str]) -> None:
    assert matches("a", labels) != matches("!a", labels)
