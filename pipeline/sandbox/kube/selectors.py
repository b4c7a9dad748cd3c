"""Label and field selectors: parsing with apiserver's grammar and matching against pods.

Pure. The store uses the positive label requirements (`=`, `in`, exists) and equality on
`metadata.name` / `status.phase` to narrow candidates through its indexes; everything else is
checked by `PodSelector.matches` on that narrowed set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .status import ApiError, JsonObj, bad_request
from .validation import label_value_errors, qualified_name_errors

POSITIVE_OPS = frozenset({"=", "in", "exists"})
NEGATIVE_OPS = frozenset({"!=", "notin", "!"})

_SET_RE = re.compile(r"^\s*(?P<key>[^\s!=<>(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*(?P<key>[^\s!=<>(),]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>[^\s,]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(?P<not>!)?\s*(?P<key>[^\s!=<>(),]+)\s*$")

FieldPaths = dict[str, tuple[str, ...]]
FIELD_PATHS: FieldPaths = {  # the pod field labels apiserver supports
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "status.phase": ("status", "phase"),
    "status.podIP": ("status", "podIP"),
    "spec.nodeName": ("spec", "nodeName"),
    "spec.restartPolicy": ("spec", "restartPolicy"),
    "spec.schedulerName": ("spec", "schedulerName"),
    "spec.serviceAccountName": ("spec", "serviceAccountName"),
}
EVENT_FIELD_PATHS: FieldPaths = {  # the core/v1 event field labels apiserver supports
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    **{f"involvedObject.{f}": ("involvedObject", f) for f in (
        "kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
    "reason": ("reason",),
    "reportingComponent": ("reportingComponent",),
    "source": ("source", "component"),
    "type": ("type",),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """One clause of a label selector; `op` is normalised (`==` becomes `=`)."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return value in self.values
        if self.op in ("!=", "notin"):
            return value not in self.values
        if self.op == "exists":
            return value is not None
        if self.op == "!":
            return value is None
        return _compare(self.op, value, next(iter(self.values)))


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    path: str
    value: str
    negated: bool
    keys: tuple[str, ...] = ()  # where `path` lives in the object

    def matches(self, obj: JsonObj) -> bool:
        return (field_value(obj, self.keys) == self.value) != self.negated


def field_value(obj: JsonObj, keys: tuple[str, ...]) -> str:
    """The value at `keys` in `obj` as a field selector compares it; empty when unset."""
    actual: object = obj
    for key in keys:
        actual = actual.get(key) if isinstance(actual, dict) else None
    return "" if actual is None else str(actual)


@dataclass(frozen=True, slots=True)
class PodSelector:
    labels: tuple[LabelRequirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = field(default=())

    def matches(self, pod: JsonObj) -> bool:
        pod_labels = pod["metadata"].get("labels") or {}
        return all(r.matches(pod_labels) for r in self.labels) and all(
            f.matches(pod) for f in self.fields
        )

    def field_equals(self, path: str) -> str | None:
        """The value a positive `path=value` clause pins, for index lookups."""
        for f in self.fields:
            if f.path == path and not f.negated:
                return f.value
        return None


def parse_selector(
    label_selector: str | None, field_selector: str | None, paths: FieldPaths = FIELD_PATHS
) -> PodSelector:
    return PodSelector(
        labels=parse_label_selector(label_selector or ""),
        fields=parse_field_selector(field_selector or "", paths),
    )


def parse_label_selector(text: str) -> tuple[LabelRequirement, ...]:
    """Parse `a=b,c!=d,e in (f,g),!h,i` as apiserver does; 400 on anything malformed."""
    return tuple(_parse_requirement(part) for part in _split_top_level(text) if part.strip())


def parse_field_selector(
    text: str, paths: FieldPaths = FIELD_PATHS
) -> tuple[FieldRequirement, ...]:
    requirements = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if match is None:
            raise bad_request(f'invalid selector: "{text}"; can\'t understand "{part}"')
        path, op, value = match.groups()
        if path not in paths:
            raise bad_request(f'field label not supported: "{path}"')
        requirements.append(FieldRequirement(path, value.strip(), op == "!=", paths[path]))
    return tuple(requirements)


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise bad_request(f"unable to parse requirement: unbalanced parentheses in {text!r}")
    parts.append(text[start:])
    return parts


def _parse_requirement(part: str) -> LabelRequirement:
    if match := _SET_RE.match(part):
        values = [v.strip() for v in match["values"].split(",")]
        if values == [""]:
            raise _unparsable(part, "for 'in', 'notin' operators, values set can't be empty")
        return _requirement(match["key"], match["op"], values)
    if match := _CMP_RE.match(part):
        op = "=" if match["op"] == "==" else match["op"]
        if op in (">", "<") and not re.fullmatch(r"-?\d+", match["value"]):
            raise _unparsable(part, "for 'Gt', 'Lt' operators, the value must be an integer")
        return _requirement(match["key"], op, [match["value"]])
    if match := _EXISTS_RE.match(part):
        return _requirement(match["key"], "!" if match["not"] else "exists", [])
    raise _unparsable(part, "found unexpected token")


def _requirement(key: str, op: str, values: list[str]) -> LabelRequirement:
    errors = [f"key: Invalid value: {key!r}: {e}" for e in qualified_name_errors(key)]
    if op not in (">", "<"):
        for value in values:
            errors += [f"values: Invalid value: {value!r}: {e}" for e in label_value_errors(value)]
    if errors:
        raise _unparsable(key, "; ".join(errors))
    return LabelRequirement(key, op, frozenset(values))


def _compare(op: str, value: str | None, bound: str) -> bool:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return False
    if number is None:
        return False
    return number > int(bound) if op == ">" else number < int(bound)


def _unparsable(part: str, why: str) -> ApiError:
    return bad_request(f"unable to parse requirement: {part.strip()!r}: {why}")
