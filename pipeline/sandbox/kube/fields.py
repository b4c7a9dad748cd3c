"""A body decoded the way apiserver's decoder treats it: unknown fields, wrong types.

A real server decodes a body into its Go type: fields the type does not declare are dropped,
and reported according to the request's `fieldValidation` (Ignore; Warn, the default, as
`Warning` headers; Strict, as 400 BadRequest). A value of the wrong JSON type (a string for
a list of strings, a list for a string) cannot be decoded at all: 400 BadRequest whatever
the mode, so nothing downstream (the kubelet) ever meets it. The declared fields and their
types come from the shipped published definitions, so the emulator stores what a cluster
would store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .openapi import Schema, definitions
from .status import JsonObj, bad_request

VALIDATION_MODES = ("Ignore", "Warn", "Strict")
_INDEX = re.compile(r"\[\d+\]")


def field_validation(params: Mapping[str, str]) -> str:
    """The request's fieldValidation directive; Warn when absent, as apiserver defaults."""
    mode = params.get("fieldValidation") or "Warn"
    if mode not in VALIDATION_MODES:
        raise bad_request(
            f'fieldValidation: Unsupported value: "{mode}": supported values: '
            '"Ignore", "Strict", "Warn"'
        )
    return mode


def decode(obj: JsonObj, definition: str, kind: str, mode: str) -> tuple[JsonObj, list[str]]:
    """`obj` without undeclared fields, and the warnings to send; 400 in Strict mode, and
    400 in any mode for a value of the wrong type."""
    unknown: list[str] = []
    cannot = f'{kind} in version "v1" cannot be handled as a {kind}'
    try:
        pruned = _prune(obj, {"$ref": "#/definitions/" + definition}, "", definition, unknown)
    except _WrongType as wrong:
        raise bad_request(f"{cannot}: json: {wrong}") from None
    messages = [f'unknown field "{path}"' for path in unknown]
    if messages and mode == "Strict":
        raise bad_request(f"{cannot}: strict decoding error: " + ", ".join(messages))
    return pruned, messages if mode == "Warn" else []


class _WrongType(Exception):
    def __init__(self, value: Any, schema: Schema, struct: str, path: str) -> None:
        go_path = _INDEX.sub("", path)  # Go names the field without list positions
        field = struct.rsplit(".", 1)[-1] + (f".{go_path}" if go_path else "")
        super().__init__(
            f"cannot unmarshal {_json_type(value)} into Go struct field {field} "
            f"of type {_go_type(schema)}"
        )


def _prune(value: Any, schema: Schema, path: str, struct: str, unknown: list[str]) -> Any:
    """`value` without undeclared fields (their paths go to `unknown`); `struct` is the
    innermost declared type around it, which a wrong type's message names."""
    if value is None:
        return None  # null decodes to the zero value of any type
    name = _ref_name(schema)
    resolved = _resolve(schema)
    if not _fits(value, resolved, name):
        raise _WrongType(value, schema, struct, path)
    struct = name or struct
    if isinstance(value, dict):
        properties = resolved.get("properties")
        extra = resolved.get("additionalProperties")
        if properties is None and extra is None:
            return value  # a free-form object (FieldsV1, RawExtension)
        kept: JsonObj = {}
        for key, item in value.items():
            child_path = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                kept[key] = _prune(item, properties[key], child_path, struct, unknown)
            elif isinstance(extra, dict):
                kept[key] = _prune(item, extra, child_path, struct, unknown)
            else:
                unknown.append(child_path)
        return kept
    if isinstance(value, list) and "items" in resolved:
        items = resolved["items"]
        return [_prune(v, items, f"{path}[{i}]", struct, unknown) for i, v in enumerate(value)]
    return value


_NUMBERS_TOO = ("io.k8s.apimachinery.pkg.api.resource.Quantity",)  # `cpu: 1` is a quantity


def _fits(value: Any, schema: Schema, name: str | None) -> bool:
    """Whether Go could decode this JSON value into the type `schema` describes."""
    kind: str | None = schema.get("type")
    if kind is None:
        return True  # not declared: anything goes
    if isinstance(value, bool):
        return kind == "boolean"
    if isinstance(value, int | float):
        integral = isinstance(value, int) or value.is_integer()
        return (
            kind == "number"
            or (kind == "integer" and integral)
            or (
                kind == "string"
                and (name in _NUMBERS_TOO or schema.get("format") == "int-or-string")
            )
        )
    expected = {"string": str, "array": list, "object": dict}.get(kind)
    return expected is not None and isinstance(value, expected)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "string"


def _go_type(schema: Schema) -> str:
    """The Go type's name as the decoder's message spells it (near enough for a person)."""
    name = _ref_name(schema)
    if name is not None:
        return "v1." + name.rsplit(".", 1)[-1]
    kind = schema.get("type")
    if kind == "array":
        return "[]" + _go_type(schema.get("items") or {})
    if kind == "object":
        return "map[string]" + _go_type(schema.get("additionalProperties") or {})
    if kind == "integer":
        return str(schema.get("format") or "int")
    return {"string": "string", "boolean": "bool", "number": "float64"}.get(str(kind), "any")


def _ref_name(schema: Schema) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _resolve(schema: Schema) -> Schema:
    while "$ref" in schema:
        schema = definitions()[schema["$ref"].rsplit("/", 1)[-1]]
    return schema
