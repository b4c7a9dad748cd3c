"""Kubernetes' protobuf request bodies, read as far as the emulator needs: object metadata.

kubectl's typed commands (`kubectl create namespace`) send `application/vnd.kubernetes.protobuf`
and client-go does not fall back to JSON, so the emulator reads that form where such a
command lands. A body is the magic `k8s\\x00`, then a `runtime.Unknown` (1: TypeMeta,
2: raw object); the object's field 1 is its ObjectMeta (1: name, 2: generateName,
11: labels, 12: annotations, as map entries of 1: key, 2: value). Only those are read;
the rest of a Namespace (spec, status) is the server's to set.
"""

from __future__ import annotations

from collections.abc import Iterator

from .status import JsonObj, bad_request

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
_LENGTH_DELIMITED = 2
_META_STRINGS = {1: "name", 2: "generateName"}
_META_MAPS = {11: "labels", 12: "annotations"}


def object_metadata(body: bytes) -> JsonObj:
    """`{"metadata": {...}}` of the object a protobuf body carries; 400 when it is not one."""
    try:
        if not body.startswith(MAGIC):
            raise ValueError("no k8s protobuf magic")
        raw = _field(body[len(MAGIC) :], 2)
        meta = _field(raw, 1)
        found: JsonObj = {}
        for number, value in _fields(meta):
            if number in _META_STRINGS and value:  # Go writes its empty strings too
                found[_META_STRINGS[number]] = value.decode()
            elif number in _META_MAPS:
                entry = dict(_fields(value))  # an empty key or value may be left out
                name, text = entry.get(1, b"").decode(), entry.get(2, b"").decode()
                found.setdefault(_META_MAPS[number], {})[name] = text
    except (ValueError, IndexError) as exc:  # UnicodeDecodeError is a ValueError
        message = f"the body of the request could not be decoded as protobuf: {exc}"
        raise bad_request(message) from None
    return {"metadata": found}


def _field(message: bytes, wanted: int) -> bytes:
    """The last length-delimited field `wanted` of `message` (protobuf's rule for repeats)."""
    values = [value for number, value in _fields(message) if number == wanted]
    if not values:
        raise ValueError(f"field {wanted} missing")
    return values[-1]


def _fields(message: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, bytes) of each length-delimited field; others are skipped."""
    at = 0
    while at < len(message):
        tag, at = _varint(message, at)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            _, at = _varint(message, at)
        elif wire_type == 1:
            at += 8
        elif wire_type == 5:
            at += 4
        elif wire_type == _LENGTH_DELIMITED:
            size, at = _varint(message, at)
            if at + size > len(message):
                raise ValueError("field runs past the end")
            yield number, message[at : at + size]
            at += size
        else:
            raise ValueError(f"wire type {wire_type} is not supported")


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
