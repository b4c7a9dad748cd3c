"""Unknown fields, found and dropped the way apiserver's decoder treats them.

A real server decodes a body into its Go type: fields the type does not declare are dropped,
and reported according to the request's `fieldValidation` (Ignore; Warn, the default, as
`Warning` headers; Strict, as 400 BadRequest). The declared fields come from the shipped
published definitions, so the emulator stores what a cluster would store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .openapi import Schema, definitions
from .status import ApiError, JsonObj, bad_request

VALIDATION_MODES = ("Ignore", "Warn", "Strict")


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
    """`obj` without undeclared fields, and the warnings to send; 400 in Strict mode."""
    unknown: list[str] = []
    pruned = _prune(obj, {"$ref": "#/definitions/" + definition}, "", unknown)
    messages = [f'unknown field "{path}"' for path in unknown]
    if messages and mode == "Strict":
        raise ApiError(
            400,
            "BadRequest",
            f'{kind} in version "v1" cannot be handled as a {kind}: strict decoding error: '
            + ", ".join(messages),
        )
    return pruned, messages if mode == "Warn" else []


def _prune(value: Any, schema: Schema, path: str, unknown: list[str]) -> Any:
    schema = _resolve(schema)
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        if properties is None and extra is None:
            return value  # a free-form object (FieldsV1, RawExtension)
        kept: JsonObj = {}
        for key, item in value.items():
            child_path = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                kept[key] = _prune(item, properties[key], child_path, unknown)
            elif isinstance(extra, dict):
                kept[key] = _prune(item, extra, child_path, unknown)
            else:
                unknown.append(child_path)
        return kept
    if isinstance(value, list) and "items" in schema:
        return [_prune(v, schema["items"], f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return value


def _resolve(schema: Schema) -> Schema:
    while "$ref" in schema:
        schema = definitions()[schema["$ref"].rsplit("/", 1)[-1]]
    return schema
