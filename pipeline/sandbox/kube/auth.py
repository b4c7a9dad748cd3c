"""Who the client is and what it may do: `kubectl auth whoami` and `kubectl auth can-i`.

The sandbox has one user. Whoever reaches it (with the `--token`, when one is set) is its
administrator, so every access review is allowed and the rules review grants everything,
which is what these commands tell a user of the sandbox. A real cluster answers from its RBAC.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from . import protowire
from .collection import json_response
from .discovery import Resource
from .pods import rfc3339
from .server import read_json
from .status import JsonObj, bad_request

USERNAME = "sandbox-admin"
GROUPS = ("system:masters", "system:authenticated")
WHY = "the sandbox allows every request it authenticates"

ACCESS_REVIEW_RESOURCE = Resource(
    "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
    "SelfSubjectAccessReview", ("create",), namespaced=False, documented=False,
)  # fmt: skip
RULES_REVIEW_RESOURCE = Resource(
    "authorization.k8s.io", "v1", "selfsubjectrulesreviews", "selfsubjectrulesreview",
    "SelfSubjectRulesReview", ("create",), namespaced=False, documented=False,
)  # fmt: skip
SUBJECT_REVIEW_RESOURCE = Resource(
    "authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview",
    "SelfSubjectReview", ("create",), namespaced=False, documented=False,
)  # fmt: skip
ANSWERS: tuple[tuple[Resource, JsonObj], ...] = (
    (ACCESS_REVIEW_RESOURCE, {"allowed": True, "reason": WHY}),
    (
        RULES_REVIEW_RESOURCE,
        {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        },
    ),
    (SUBJECT_REVIEW_RESOURCE, {"userInfo": {"username": USERNAME, "groups": list(GROUPS)}}),
)
RESOURCES = tuple(resource for resource, _ in ANSWERS)


def auth_routes() -> list[web.RouteDef]:
    return [web.post(_path(r), _reviewer(r, status)) for r, status in ANSWERS]


def _path(resource: Resource) -> str:
    return f"/apis/{resource.group_version}/{resource.name}"


def _reviewer(resource: Resource, status: JsonObj) -> Handler:
    """The review answered with `status`, whatever it asked."""

    async def review(request: web.Request) -> web.Response:
        if request.content_type == protowire.CONTENT_TYPE:  # kubectl's: its spec is not read
            body: Any = {}
        else:
            body = await read_json(request)
        if not isinstance(body, dict):
            raise bad_request(f"a {resource.kind} must be a JSON object")
        answer: JsonObj = {
            **body,
            "kind": resource.kind,
            "apiVersion": resource.group_version,
            "metadata": {"creationTimestamp": rfc3339()},
            "status": status,
        }
        return json_response(answer, 201)

    return review
