"""Fault injection and request accounting for the fake apiserver.

Tests arm a `Fault` for a verb and resource ("create", "pods"); the next `count` matching requests are
delayed and/or answered with a realistic `Status` (409, 422, 429 + Retry-After, 500, 503, 403 quota vs
RBAC). Every request is also counted by (verb, resource) so tests can assert API economy — e.g. "the
controller never lists pods after the initial sync". Requests from the simulated kubelet (recognised by
its User-Agent) are counted apart, so they do not blur what the code under test did.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from app.simulate import kube_status
from app.simulate.kube_status import ApiError, Cause

KUBELET_USER_AGENT = "simulated-kubelet"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


@dataclass
class Fault:
    """One armed fault: matches `verb` on `resource` ("*" matches any) for `remaining` requests."""

    verb: str
    resource: str
    status: int | None
    remaining: int
    delay: float = 0.0
    retry_after: int | None = None
    quota: bool = False
    message: str = ""

    def matches(self, verb: str, resource: str) -> bool:
        return self.verb in ("*", verb) and self.resource in ("*", resource)

    def error(self, verb: str, resource: str, namespace: str, name: str) -> ApiError | None:
        """The error this fault answers with, worded as the apiserver would for that request."""
        if self.status is None:
            return None
        error = _error_for(self, verb, resource, namespace, name or resource)
        if self.message:
            error.message = self.message
        return error


def _error_for(fault: Fault, verb: str, resource: str, namespace: str, name: str) -> ApiError:
    code = fault.status
    if code == 403:
        if fault.quota:
            return kube_status.forbidden_quota(resource, name)
        return kube_status.forbidden_rbac(verb, resource, namespace)
    if code == 409:
        return kube_status.conflict(resource, name)
    if code == 422:
        return kube_status.invalid(resource, name, [Cause("metadata", "Invalid value: injected fault")])
    if code == 429:
        return kube_status.too_many_requests(fault.retry_after if fault.retry_after is not None else 1)
    if code == 500:
        return kube_status.internal_error()
    if code == 503:
        return kube_status.unavailable(fault.retry_after)
    if code == 410:
        return kube_status.ApiError(410, "The resourceVersion for the provided list is too old.", "Expired")
    return ApiError(int(code or 500), f"injected failure {code}")


class FaultBook:
    """Armed faults plus request counters; safe to use from the test thread and the server thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.kubelet_counts: Counter[tuple[str, str]] = Counter()

    def arm(self, fault: Fault) -> None:
        if fault.verb not in (*VERBS, "*"):
            raise ValueError(f"unknown verb {fault.verb!r}; expected one of {', '.join(VERBS)} or '*'")
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, verb: str, resource: str, *, user_agent: str) -> Fault | None:
        """Count the request and consume the first armed fault that matches it, if any."""
        with self._lock:
            counter = self.kubelet_counts if user_agent.startswith(KUBELET_USER_AGENT) else self.counts
            counter[(verb, resource)] += 1
            for fault in self._faults:
                if fault.matches(verb, resource):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
            return None

    def count(self, verb: str | None = None, resource: str | None = None, *, kubelet: bool = False) -> int:
        counter = self.kubelet_counts if kubelet else self.counts
        with self._lock:
            return sum(n for (v, r), n in counter.items() if verb in (None, v) and resource in (None, r))
