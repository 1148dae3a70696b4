"""The controller's one error tree.

Every error the service raises on purpose derives from ``ControllerError``; foreign errors (httpx,
pydantic, the kubernetes client) are translated at the adapter that meets them, with ``raise … from exc``.

    ControllerError
    ├── WebhookRejected(status, reason)        a webhook we refuse: send ``status`` (a 4xx) and ``reason``
    ├── ConfigInvalid(key, reason)             the controller's own config is wrong: refuse to start
    ├── JobRejected(job_uuid, field, message)  this job cannot run: fail it in Buildkite with ``message``
    ├── BuildkiteError(message)                a call to Buildkite failed
    │   ├── RateLimited(retry_after)           429: wait ``retry_after`` seconds, then retry
    │   ├── BuildkiteUnavailable               5xx, timeout, connection error: retry later
    │   ├── BuildkiteAuthError                 401/403: the token is wrong; retrying cannot help
    │   └── GraphQLErrors(messages)            the GraphQL response carried ``errors``
    └── (Kubernetes errors: see the section at the end of this module)

``BuildkiteError.is_retryable`` tells a caller whether the same call may succeed later.
Messages never contain tokens or webhook secrets.
"""

from __future__ import annotations

from collections.abc import Sequence


class ControllerError(Exception):
    """Base of every error the controller raises deliberately."""


class WebhookRejected(ControllerError):
    """A webhook request is refused; ``status`` is the 4xx to answer with, ``reason`` says why.

    Never a 5xx: Buildkite cannot fix a bad request by resending it, and the reason is shown in
    Buildkite's webhook log, so it must make sense to the person reading it there.
    """

    def __init__(self, status: int, reason: str) -> None:
        if not 400 <= status < 500:
            raise ValueError(f"WebhookRejected needs a 4xx status, got {status}")
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


class ConfigInvalid(ControllerError):
    """The controller's configuration is invalid; ``key`` is the dotted path of the bad setting."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"config {key!r}: {reason}")


class JobRejected(ControllerError):
    """One Buildkite job cannot run; it is failed in Buildkite with ``message`` and nothing else stops.

    ``field`` is the dotted path of the offending input (e.g. ``kubernetes.podSpec.containers[1].image``),
    or ``""`` when the problem is not tied to one field.
    """

    def __init__(self, job_uuid: str, field: str, message: str) -> None:
        self.job_uuid = job_uuid
        self.field = field
        self.message = message
        super().__init__(f"job {job_uuid}: {field}: {message}" if field else f"job {job_uuid}: {message}")


class BuildkiteError(ControllerError):
    """A call to a Buildkite API failed. The message names the call and the status, never a token."""

    is_retryable: bool = False


class RateLimited(BuildkiteError):
    """Buildkite answered 429; ``retry_after`` is how many seconds it asked us to wait."""

    is_retryable = True

    def __init__(self, retry_after: float, message: str = "") -> None:
        self.retry_after = retry_after
        super().__init__(message or f"rate limited by Buildkite; retry after {retry_after:.3g} s")


class BuildkiteUnavailable(BuildkiteError):
    """Buildkite could not be reached or answered 5xx; the same call may succeed later."""

    is_retryable = True


class BuildkiteAuthError(BuildkiteError):
    """Buildkite refused our credentials (401/403); fix the token, retrying cannot help."""


class GraphQLErrors(BuildkiteError):
    """The GraphQL response held ``errors``; ``messages`` are their texts in order.

    ``transient`` is set for errors that say the server timed out or is busy; a schema or
    complexity error is permanent because the same query will fail the same way.
    """

    def __init__(self, messages: Sequence[str], *, transient: bool = False) -> None:
        self.messages = tuple(messages)
        self.transient = transient
        self.is_retryable = transient
        shown = "; ".join(message[:200] for message in self.messages[:3])
        more = f" (+{len(self.messages) - 3} more)" if len(self.messages) > 3 else ""
        super().__init__(f"GraphQL errors: {shown}{more}")


# --- Kubernetes errors -------------------------------------------------------------------------------
# Kubernetes API failures are translated into this tree in ``app/kube.py`` only; their classes
# (``KubeError`` and its children) belong here, below this line, next to the others.


class KubeError(ControllerError):
    """The Kubernetes API refused a call: the apiserver's ``status`` and ``reason``, its message cut short."""

    is_retryable: bool = False

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message[:1024]
        super().__init__(f"Kubernetes {status} {reason}: {self.message}")


class AlreadyExists(KubeError):
    """409 AlreadyExists. For a pod named after its job UUID this means the work is already done."""


class NotFound(KubeError):
    """404 NotFound."""


class Conflict(KubeError):
    """409 Conflict: the object changed since we read it (optimistic concurrency); re-read and retry."""

    is_retryable = True


class Invalid(KubeError):
    """422 Invalid (or a body the client refused): the object can never be accepted as it is."""

    def __init__(self, status: int, reason: str, message: str, causes: Sequence[str] = ()) -> None:
        super().__init__(status, reason, message)
        self.causes = tuple(causes)


class Forbidden(KubeError):
    """403. ``is_quota``: a ResourceQuota is exhausted, so the same create may succeed later.

    Any other 403 (RBAC, PodSecurity admission, a missing service account) will fail again.
    """

    def __init__(self, status: int, reason: str, message: str, *, is_quota: bool) -> None:
        super().__init__(status, reason, message)
        self.is_quota = is_quota
        self.is_retryable = is_quota


class KubeUnavailable(KubeError):
    """429, 5xx, a timeout or a broken connection: retry, after ``retry_after`` seconds if given."""

    is_retryable = True

    def __init__(self, status: int, reason: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(status, reason, message)
        self.retry_after = retry_after


class WatchExpired(KubeError):
    """410 Gone on a watch: the resourceVersion is older than the apiserver's history. Re-list."""
