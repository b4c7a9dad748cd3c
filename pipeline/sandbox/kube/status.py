"""Kubernetes `Status` errors: the codes, reasons and messages real API servers answer with.

Clients branch on `code` and `reason` (the launcher treats 409 AlreadyExists as "already
created", 422 Invalid as fatal, 429/5xx as retriable), so these mirror apiserver wording.
"""

from __future__ import annotations

from typing import Any

JsonObj = dict[str, Any]


class ApiError(Exception):
    """An API failure answered as a `Status` object with the matching HTTP code."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: JsonObj | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def status(self) -> JsonObj:
        """The `Status` body, as `kubectl` and the python client parse it."""
        body: JsonObj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(name: str, resource: str = "pods") -> ApiError:
    details = _details(name, resource)
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', details=details)


def already_exists(name: str, resource: str = "pods") -> ApiError:
    message = f'{resource} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, details=_details(name, resource))


def conflict(name: str, resource: str = "pods") -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, details=_details(name, resource))


def invalid(name: str, causes: list[JsonObj], kind: str = "Pod") -> ApiError:
    """422 with one cause per field error, worded like apiserver's field.ErrorList."""
    summary = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
    if len(causes) > 1:
        summary = f"[{summary}]"
    details = {"name": name, "kind": kind, "causes": causes}
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
        details={"retryAfterSeconds": retry_after},
        retry_after=retry_after,
    )


def server_error(code: int, retry_after: int) -> ApiError:
    """An injected 5xx; 503 carries Retry-After as an overloaded apiserver does."""
    if code == 503:
        return ApiError(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            details={"retryAfterSeconds": retry_after},
            retry_after=retry_after,
        )
    message = "Internal error occurred: injected fault"
    return ApiError(code, "InternalError", message, details={"causes": [{"message": message}]})


def unsupported_media_type(content_type: str) -> ApiError:
    message = (
        f"the body of the request was in an unknown format ({content_type}) - accepted media "
        "types include: application/json-patch+json, application/merge-patch+json, "
        "application/strategic-merge-patch+json"
    )
    return ApiError(415, "UnsupportedMediaType", message)


def forbidden(name: str, resource: str, why: str) -> ApiError:
    message = f'{resource} "{name}" is forbidden: {why}'
    return ApiError(403, "Forbidden", message, details=_details(name, resource))


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def field_cause(field: str, message: str, reason: str = "FieldValueInvalid") -> JsonObj:
    return {"reason": reason, "message": message, "field": field}


def _details(name: str, resource: str) -> JsonObj:
    return {"name": name, "kind": resource}
