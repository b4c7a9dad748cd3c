"""Finished states held deflated: whatever goes in comes out, and plain JSON passes through."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from pipeline.reducer.packing import PACKED, pack, unpack

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=40,
)


@given(st.dictionaries(st.text(), json_values, max_size=8))
def test_any_json_object_unpacks_to_the_bytes_packed(value: dict[str, object]) -> None:
    encoded = orjson.dumps(value)
    packed = pack(encoded)
    assert packed.startswith(PACKED)
    assert unpack(packed) == encoded


@given(st.binary(min_size=1, max_size=5_000))
def test_any_bytes_survive_packing_beyond_the_window(data: bytes) -> None:
    assert unpack(pack(data)) == data


def test_plain_json_is_read_as_it_is() -> None:
    encoded = b'{"state":"running"}'
    assert unpack(encoded) is encoded
