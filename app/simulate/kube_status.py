"""Kubernetes `Status` bodies and the error type the fake apiserver raises.

Every failed request to the fake answers with a `Status` object shaped exactly like the real
kube-apiserver's (kind Status, apiVersion v1, status Failure, message, reason, code, details), because
the official client turns that body into `ApiException.status` / `.reason` / `.body`, and code under
test branches on those. Messages copy the apiserver's wording so logs read the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# reason for each HTTP code when the caller does not name one (apimachinery's StatusReason values).
DEFAULT_REASONS: dict[int, str] = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class Cause:
    """One field-level problem, as listed in `Status.details.causes` of a 422 Invalid."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


@dataclass
class ApiError(Exception):
    """A request failure that the HTTP layer renders as a `Status` body with `code`."""

    code: int
    message: str
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if not self.reason:
            self.reason = DEFAULT_REASONS.get(self.code, "Unknown")

    def to_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(kind: str, name: str, group: str = "") -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": kind}
    if group:
        details["group"] = group
    return details


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, f'{qualified} "{name}" not found', "NotFound", _details(resource, name, group))


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(
        409, f'{qualified} "{name}" already exists', "AlreadyExists", _details(resource, name, group)
    )


def conflict(resource: str, name: str, group: str = "", why: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    message = f'Operation cannot be fulfilled on {qualified} "{name}": {why}'
    return ApiError(409, message, "Conflict", _details(resource, name, group))


def invalid(kind: str, name: str, causes: list[Cause], group: str = "") -> ApiError:
    """422 Invalid listing every cause, worded like the apiserver's aggregated field errors."""
    listed = ", ".join(f"{c.field}: {c.message}" for c in causes)
    summary = listed if len(causes) == 1 else f"[{listed}]"
    details = _details(kind, name, group)
    details["causes"] = [c.to_dict() for c in causes]
    return ApiError(422, f'{kind} "{name}" is invalid: {summary}', "Invalid", details)


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(410, f"too old resource version: {requested} ({oldest})", "Expired")


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def forbidden_rbac(verb: str, resource: str, namespace: str, group: str = "") -> ApiError:
    message = (
        f'{resource} is forbidden: User "system:serviceaccount:{namespace}:buildkite-controller" '
        f'cannot {verb} resource "{resource}" in API group "{group}" in the namespace "{namespace}"'
    )
    return ApiError(403, message, "Forbidden", {"kind": resource})


def forbidden_quota(resource: str, name: str) -> ApiError:
    message = (
        f'{resource} "{name}" is forbidden: exceeded quota: compute-resources, '
        "requested: limits.cpu=1, used: limits.cpu=8, limited: limits.cpu=8"
    )
    return ApiError(403, message, "Forbidden", _details(resource, name))


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "Too many requests, please try again later.",
        "TooManyRequests",
        {"causes": [{"message": "client rate limiter"}], "retryAfterSeconds": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def internal_error(message: str = "") -> ApiError:
    return ApiError(500, message or "Internal error occurred: etcdserver: request timed out", "InternalError")


def unavailable(retry_after: int | None = None) -> ApiError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return ApiError(
        503, "the server is currently unable to handle the request", "ServiceUnavailable", headers=headers
    )
