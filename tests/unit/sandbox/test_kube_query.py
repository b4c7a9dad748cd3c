"""Query parameters parsed as kube-apiserver parses them."""

from __future__ import annotations

import pytest

from pipeline.sandbox.kube.query import flag, integer
from pipeline.sandbox.kube.status import ApiError


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1", "t", "T", "yes", ""])
def test_anything_but_false_and_zero_is_true(value: str) -> None:
    assert flag({"watch": value}, "watch") is True


@pytest.mark.parametrize("value", ["false", "False", "FALSE", "fAlSe", "0"])
def test_false_and_zero_are_false(value: str) -> None:
    assert flag({"watch": value}, "watch") is False


def test_an_absent_flag_is_false() -> None:
    assert flag({}, "watch") is False


@pytest.mark.parametrize(("value", "parsed"), [("5", 5), ("+5", 5), ("-2", -2), ("", None)])
def test_integers_parse_like_go(value: str, parsed: int | None) -> None:
    assert integer({"tailLines": value}, "tailLines") == parsed


@pytest.mark.parametrize("value", ["1.5", " 5", "1_000", "ten"])
def test_malformed_integers_are_400(value: str) -> None:
    with pytest.raises(ApiError) as raised:
        integer({"tailLines": value}, "tailLines")
    assert raised.value.code == 400
    assert "tailLines" in raised.value.message
