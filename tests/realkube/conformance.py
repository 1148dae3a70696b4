"""Helpers of the conformance suite: one scenario, two apiservers, the answers compared.

A scenario is a function of a ``Target`` (an HTTP client aimed at one apiserver and the namespace to use)
returning what it observed, normalised so that only what a client may rely on is left: status codes,
``Status`` reasons, messages and details, object fields. Values that differ by nature between any two
servers (uids, resourceVersions, timestamps, ``managedFields``, generated names) are replaced by
placeholders or relations ("the resourceVersion went up"); the rest must be equal.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

Json = dict[str, Any]

PODS = "/api/v1/namespaces/{ns}/pods"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
# Server-set values that differ between any two apiservers, and so are compared as "present" only.
VOLATILE_METADATA = ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp")
# Not compared at all: server-side-apply field ownership, which the fake does not keep (the controller
# never sends apply patches nor reads managedFields).
UNCOMPARED = ("managedFields",)
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@dataclass
class Target:
    """One apiserver under test."""

    name: str  # "real" or "fake"
    http: httpx.Client
    namespace: str
    compact: Callable[[], None]  # make every resourceVersion seen so far too old to watch from

    def path(self, template: str, *parts: str) -> str:
        return "/".join([template.format(ns=self.namespace), *parts])


def pod(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> Json:
    """A small pod that passes PodSecurity `restricted` too, so one manifest serves every namespace."""
    container = {
        "name": "main",
        "image": "alpine:3.20",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": "conformance"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [container],
            **spec,
        },
    }


def status_of(response: httpx.Response) -> Json:
    """The parts of an error answer a client branches on: code, and the Status body."""
    body = response.json()
    shape = {"code": response.status_code}
    for key in ("kind", "apiVersion", "status", "reason", "message", "code"):
        if key in body:
            shape[f"body.{key}"] = body[key]
    details = body.get("details")
    if details:
        shape["body.details"] = {
            k: v for k, v in details.items() if k not in ("uid", "causes", "retryAfterSeconds")
        }
        if "causes" in details:
            shape["body.details.causes"] = sorted(
                (c.get("field", ""), c.get("reason", "")) for c in details["causes"]
            )
    return shape


def normalise(obj: Any) -> Any:
    """A deep copy with volatile metadata and timestamps replaced by placeholders."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key in UNCOMPARED:
                continue
            if key in VOLATILE_METADATA:
                out[key] = "<set>"
            elif isinstance(value, str) and _TIMESTAMP.match(value):
                out[key] = "<time>"
            elif isinstance(value, str) and value.startswith("kube-api-access-"):
                out[key] = "kube-api-access-<random>"  # the ServiceAccount token volume's generated name
            else:
                out[key] = normalise(value)
        return out
    if isinstance(obj, list):
        return [normalise(item) for item in obj]
    return obj


def events(response: httpx.Response) -> Iterator[Json]:
    for line in response.iter_lines():
        if line.strip():
            yield json.loads(line)


def watch(
    target: Target,
    template: str,
    *,
    resource_version: str,
    until: Callable[[Json], bool],
    timeout: float = 20,
    **query: str,
) -> list[Json]:
    """Events (type + object) from ``resource_version`` until ``until(event)`` holds or the stream ends."""
    params = {
        "watch": "true",
        "resourceVersion": resource_version,
        "timeoutSeconds": str(int(timeout)),
        **query,
    }
    seen: list[Json] = []
    deadline = time.monotonic() + timeout
    with target.http.stream("GET", target.path(template), params=params, timeout=timeout + 5) as response:
        if response.status_code != 200:
            response.read()
            return [{"type": "HTTP", "object": status_of(response)}]
        for event in events(response):
            if event["type"] == "BOOKMARK":
                continue  # only the fake sends them here (the real one runs without its watch cache)
            seen.append(event)
            if until(event) or time.monotonic() > deadline:
                break
    return seen


def differences(real: Any, fake: Any, path: str = "") -> list[str]:
    """Every path at which the two observations differ, with both values."""
    if isinstance(real, dict) and isinstance(fake, dict):
        found = []
        for key in sorted(set(real) | set(fake), key=str):
            if key not in fake:
                found.append(f"{path}.{key}: real {json.dumps(real[key])[:300]}, fake has none")
            elif key not in real:
                found.append(f"{path}.{key}: fake {json.dumps(fake[key])[:300]}, real has none")
            else:
                found += differences(real[key], fake[key], f"{path}.{key}")
        return found
    if isinstance(real, list) and isinstance(fake, list) and len(real) == len(fake):
        return [
            d
            for n, (r, f) in enumerate(zip(real, fake, strict=True))
            for d in differences(r, f, f"{path}[{n}]")
        ]
    if real != fake:
        return [f"{path}: real {json.dumps(real)[:300]}, fake {json.dumps(fake)[:300]}"]
    return []


def diff(real: Any, fake: Any) -> str:
    """The differences, one a line, for assertion messages."""
    return "fake differs from real:\n" + "\n".join(differences(real, fake))
