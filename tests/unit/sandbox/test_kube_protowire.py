"""Reading object metadata out of kubectl's protobuf request bodies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.sandbox.kube.protowire import MAGIC, object_metadata
from pipeline.sandbox.kube.status import ApiError

# What kubectl v1.32 sends for `kubectl create namespace team-a` (its -v=8 request dump).
KUBECTL_CREATE_NAMESPACE = bytes.fromhex(
    "6b3873000a0f0a02763112094e616d657370616365121e0a160a067465616d2d61"
    "12001a0022002a0032003800420012001a020a001a002200"
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _body(meta: bytes) -> bytes:
    type_meta = _field(1, b"v1") + _field(2, b"Namespace")
    return MAGIC + _field(1, type_meta) + _field(2, _field(1, meta))


def test_reads_the_name_kubectl_sends() -> None:
    assert object_metadata(KUBECTL_CREATE_NAMESPACE) == {"metadata": {"name": "team-a"}}


def test_reads_labels_annotations_and_generate_name() -> None:
    label = _field(11, _field(1, b"owner") + _field(2, b"data"))
    note = _field(12, _field(1, b"why") + _field(2, "ünïcode".encode()))
    meta = _field(2, b"t-") + label + note + _varint(5 << 3) + _varint(300)  # and a varint field
    assert object_metadata(_body(meta)) == {
        "metadata": {
            "generateName": "t-",
            "labels": {"owner": "data"},
            "annotations": {"why": "ünïcode"},
        }
    }


def test_a_label_with_an_empty_value_left_out_reads_as_empty() -> None:
    meta = _field(1, b"n") + _field(11, _field(1, b"flag"))
    assert object_metadata(_body(meta)) == {"metadata": {"name": "n", "labels": {"flag": ""}}}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"metadata": {"name": "json"}}',
        MAGIC,
        MAGIC + _field(1, b"only type meta"),
        MAGIC + b"\x12\x7f",  # a field longer than the body
        MAGIC + b"\x12\x02\x0a",  # the object's metadata runs past its end
        _body(_field(1, b"\xff\xfe")),  # a name that is not UTF-8
        MAGIC + b"\x13",  # a wire type (start group) no Kubernetes message uses
    ],
)
def test_a_body_that_is_not_one_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(ApiError) as raised:
        object_metadata(body)
    assert raised.value.code == 400


@given(st.binary(max_size=200))
def test_any_bytes_are_read_or_refused_with_400(body: bytes) -> None:
    try:
        object_metadata(MAGIC + body)
    except ApiError as error:
        assert error.code == 400
