"""The Kubernetes gateway: the only module that imports ``kubernetes``.

It speaks raw JSON through the official async client (its auth, TLS and kubeconfig handling) and skips
model deserialisation, which would cap the watch at a few thousand events per second. Every apiserver
error becomes one of ``app.errors``' ``KubeError`` classes here, and nowhere else. A client-side token
bucket keeps us polite to the API server.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import orjson
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

from app.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    Invalid,
    KubeError,
    KubeUnavailable,
    NotFound,
    WatchExpired,
)

# Every (apiGroup, resource, verb) this module calls; deploy/'s Role must grant exactly these.
REQUIRED_RBAC: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("", "pods", "create"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods", "delete"),
        ("", "pods", "patch"),
        ("", "pods/log", "get"),
        ("", "podtemplates", "get"),
        ("", "events", "list"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
    }
)

Json = dict[str, Any]
# A Retry-After longer than this is not believed: the pause is capped so one odd answer cannot stall us.
MAX_PAUSE_SECONDS = 30.0


class TokenBucket:
    """The client-side limit: ``qps`` tokens a second, up to ``burst`` banked (client-go's limiter);
    ``qps`` 0 means no client-side limit. Either way a 429's ``Retry-After`` pauses every call (``pause``):
    the apiserver's own flow control (API Priority and Fairness) says when it can take more."""

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.qps, self.burst, self._clock, self._sleep = qps, burst, clock, sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self._paused_until = -math.inf
        self.waited_seconds = 0.0

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + min(seconds, MAX_PAUSE_SECONDS))

    async def acquire(self) -> None:
        async with self._lock:
            now = self._clock()
            if self._paused_until > now:
                wait = self._paused_until - now
                self.waited_seconds += wait
                await self._sleep(wait)
                now = self._clock()
            if self.qps <= 0:
                return
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.qps
                self.waited_seconds += wait
                await self._sleep(wait)
                self._stamp = self._clock()
                self._tokens = 1.0
            self._tokens -= 1


class KubeGateway(Protocol):
    """What the stages need from Kubernetes. ``KubeAPI`` implements it; stage tests may use a fake."""

    namespace: str

    async def create_pod(self, manifest: Json) -> Json: ...
    async def delete_pod(
        self, name: str, *, uid: str | None = None, grace_seconds: int | None = None
    ) -> bool: ...
    async def annotate_pod(self, name: str, annotations: Mapping[str, str | None]) -> None: ...
    async def get_pod_template(self, name: str) -> Json | None: ...
    async def list_pods(self, label_selector: str) -> tuple[list[Json], str]: ...
    def watch_pods(self, label_selector: str, resource_version: str) -> AsyncIterator[tuple[str, Json]]: ...
    async def list_events(self, involved_name: str) -> list[Json]: ...
    async def read_pod_log(
        self,
        name: str,
        container: str,
        *,
        tail_lines: int,
        limit_bytes: int,
        previous: bool = False,
        timeout_seconds: float | None = None,
    ) -> bytes: ...
    async def get_lease(self, name: str) -> Json | None: ...
    async def create_lease(self, lease: Json) -> Json: ...
    async def replace_lease(self, name: str, lease: Json) -> Json: ...


async def load_client_config(kubeconfig: str | None) -> kclient.Configuration:
    """kubeconfig if given or present at ~/.kube/config, else the in-cluster service account."""
    configuration = kclient.Configuration()
    try:
        await kconfig.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    except (kconfig.ConfigException, FileNotFoundError, TypeError):
        if kubeconfig:
            raise
        kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


async def open_kube_api(
    *, kubeconfig: str | None, namespace: str, limiter: TokenBucket, lease_namespace: str | None = None
) -> KubeAPI:
    """The gateway for a real cluster; close it with ``await gateway.close()``."""
    configuration = await load_client_config(kubeconfig)
    if not _environment_configures_http():
        # The client's aiohttp session trusts the environment, which costs a netrc read and a proxy
        # lookup in worker threads on EVERY request (~7% of the busy event loop in a burst, py-spy).
        # Without proxy variables or a netrc file that lookup always finds nothing: skip it.
        configuration.client_session_kwargs = {"trust_env": False}
    client = kclient.ApiClient(configuration)
    return KubeAPI(client, namespace=namespace, limiter=limiter, lease_namespace=lease_namespace)


def _environment_configures_http() -> bool:
    """True when proxy variables or a netrc file could change how aiohttp sends a request."""
    if any(name.lower().endswith("_proxy") and value for name, value in os.environ.items()):
        return True
    netrc = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    return os.path.exists(netrc)


class KubeAPI:
    """``KubeGateway`` over the official async client: pods, templates and events in the jobs namespace,
    the leader Lease in ``lease_namespace`` (the controller's own; the jobs namespace when not given)."""

    def __init__(
        self,
        api_client: kclient.ApiClient,
        *,
        namespace: str,
        limiter: TokenBucket,
        request_timeout_seconds: float = 30,
        lease_namespace: str | None = None,
    ) -> None:
        self._client = api_client
        self.namespace = namespace
        self._limiter = limiter
        self._timeout = request_timeout_seconds
        ns = quote(namespace, safe="")
        self._pods = f"/api/v1/namespaces/{ns}/pods"
        self._templates = f"/api/v1/namespaces/{ns}/podtemplates"
        self._events = f"/api/v1/namespaces/{ns}/events"
        self.lease_namespace = lease_namespace or namespace
        lease_ns = quote(self.lease_namespace, safe="")
        self._leases = f"/apis/coordination.k8s.io/v1/namespaces/{lease_ns}/leases"
        self.requests = 0

    async def close(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]

    # --- pods -----------------------------------------------------------------------------------------

    async def create_pod(self, manifest: Json) -> Json:
        return await self._call("POST", self._pods, body=manifest)

    async def delete_pod(
        self, name: str, *, uid: str | None = None, grace_seconds: int | None = None
    ) -> bool:
        """Delete; ``uid`` guards against deleting a newer pod of the same name. False if already gone."""
        options: Json = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            options["preconditions"] = {"uid": uid}
        if grace_seconds is not None:
            options["gracePeriodSeconds"] = grace_seconds
        try:
            await self._call("DELETE", f"{self._pods}/{quote(name, safe='')}", body=options)
        except NotFound:
            return False
        except Conflict:
            return False  # the uid precondition failed: the pod we meant is already gone
        return True

    async def annotate_pod(self, name: str, annotations: Mapping[str, str | None]) -> None:
        patch = {"metadata": {"annotations": dict(annotations)}}
        await self._call(
            "PATCH",
            f"{self._pods}/{quote(name, safe='')}",
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def list_pods(self, label_selector: str) -> tuple[list[Json], str]:
        """Every pod matching the selector (paged), and the list's resourceVersion to watch from."""
        items: list[Json] = []
        token = ""
        while True:
            query = {"labelSelector": label_selector, "limit": "500"}
            if token:
                query["continue"] = token
            page = await self._call("GET", self._pods, query=query)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                return items, str(metadata.get("resourceVersion") or "")

    async def watch_pods(self, label_selector: str, resource_version: str) -> AsyncIterator[tuple[str, Json]]:
        """Events (type, raw object) from ``resource_version`` on; ends when the server closes the stream.

        Raises ``WatchExpired`` on 410 Gone: resource versions are only kept for a few minutes, so a
        watcher that fell behind must re-list. BOOKMARK events are passed through for their version.
        """
        query = {
            "labelSelector": label_selector,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        await self._limiter.acquire()
        try:
            # The server ends the watch after timeoutSeconds; the client allows a little longer.
            response = await self._raw("GET", self._pods, query=query, timeout=330)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Not only the stream: the connect itself fails while the apiserver restarts.
            raise KubeUnavailable(0, "ConnectionError", f"watch {self._pods}: {exc!r}") from exc
        try:
            if response.status >= 400:
                raise _translate(response.status, await _read_json(response))
            while True:
                line = await response.content.readline()
                if not line:
                    return
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise _translate(int(obj.get("code") or 500), obj, watch=True)
                yield kind, obj
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise KubeUnavailable(0, "WatchBroken", f"watch stream broke: {exc!r}") from exc
        finally:
            response.release()

    async def list_events(self, involved_name: str) -> list[Json]:
        query = {"fieldSelector": f"involvedObject.name={involved_name}"}
        return (await self._call("GET", self._events, query=query)).get("items") or []

    async def read_pod_log(
        self,
        name: str,
        container: str,
        *,
        tail_lines: int,
        limit_bytes: int,
        previous: bool = False,
        timeout_seconds: float | None = None,
    ) -> bytes:
        """The last ``tail_lines`` lines of one container's log, at most ``limit_bytes`` bytes.

        ``previous``: the instance before the last restart. The kubelet applies ``limitBytes`` from the
        start of the tail, so a caller wanting the very end asks for more and cuts. We read no more
        than ``limit_bytes`` whatever the server sends. 404 (pod gone) → ``NotFound``; 400 (container
        unknown or never started, no previous instance) → ``Invalid``; 403 → ``Forbidden``; a timeout,
        or a kubelet the apiserver cannot reach (5xx) → ``KubeUnavailable``.
        """
        query = {
            "container": container,
            "tailLines": str(max(1, tail_lines)),
            "limitBytes": str(max(1, limit_bytes)),
        }
        if previous:
            query["previous"] = "true"
        path = f"{self._pods}/{quote(name, safe='')}/log"
        await self._limiter.acquire()
        timeout = self._timeout if timeout_seconds is None else timeout_seconds
        try:
            response = await self._raw(
                "GET", path, query=query, timeout=timeout, accept="text/plain, application/json"
            )
            try:
                if response.status >= 400:
                    payload = await _read_json(response)
                    retry_after = response.headers.get("Retry-After")
                    raise _translate(response.status, payload, retry_after=retry_after)
                return await _read_at_most(response, max(1, limit_bytes))
            finally:
                response.release()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise KubeUnavailable(0, "ConnectionError", f"GET {path}: {exc!r}") from exc

    async def get_pod_template(self, name: str) -> Json | None:
        try:
            return await self._call("GET", f"{self._templates}/{quote(name, safe='')}")
        except NotFound:
            return None

    # --- leases ---------------------------------------------------------------------------------------

    async def get_lease(self, name: str) -> Json | None:
        try:
            return await self._call("GET", f"{self._leases}/{quote(name, safe='')}")
        except NotFound:
            return None

    async def create_lease(self, lease: Json) -> Json:
        return await self._call("POST", self._leases, body=lease)

    async def replace_lease(self, name: str, lease: Json) -> Json:
        return await self._call("PUT", f"{self._leases}/{quote(name, safe='')}", body=lease)

    # --- transport ------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Json | None = None,
        content_type: str = "application/json",
    ) -> Json:
        await self._limiter.acquire()
        try:
            response = await self._raw(
                method, path, query=query, body=body, content_type=content_type, timeout=self._timeout
            )
            try:
                payload = await _read_json(response)
            finally:
                response.release()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise KubeUnavailable(0, "ConnectionError", f"{method} {path}: {exc!r}") from exc
        if response.status >= 400:
            error = _translate(response.status, payload, retry_after=response.headers.get("Retry-After"))
            if response.status == 429 and isinstance(error, KubeUnavailable) and error.retry_after:
                self._limiter.pause(error.retry_after)
            raise error
        return payload

    async def _raw(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Json | None = None,
        content_type: str = "application/json",
        timeout: float | None,
        accept: str = "application/json",
    ) -> aiohttp.ClientResponse:
        self.requests += 1
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        params = await self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        result = await self._client.call_api(*params, _request_timeout=timeout, _preload_content=False)
        response: aiohttp.ClientResponse = result.response  # RESTResponse keeps it untyped
        return response


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to ``limit`` bytes: a server ignoring ``limitBytes`` cannot make us hold more."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        part = await response.content.read(limit - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


async def _read_json(response: aiohttp.ClientResponse) -> Json:
    raw = await response.read()
    try:
        value = orjson.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw[:256].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"message": str(value)[:256]}


def _translate(
    status: int, payload: Mapping[str, Any], *, retry_after: str | None = None, watch: bool = False
) -> KubeError:
    """An apiserver ``Status`` as the matching ``KubeError``."""
    reason = str(payload.get("reason") or "")
    message = str(payload.get("message") or "")
    if watch and status == 410:
        return WatchExpired(status, reason or "Expired", message)
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(status, reason, message)
    if status == 409:
        return Conflict(status, reason or "Conflict", message)
    if status == 404:
        return NotFound(status, reason or "NotFound", message)
    if status in (400, 422):
        details = payload.get("details") or {}
        causes = [
            f"{c.get('field', '')}: {c.get('message', '')}"
            for c in details.get("causes") or []
            if isinstance(c, dict)
        ]
        return Invalid(status, reason or "Invalid", message, causes)
    if status == 403:
        return Forbidden(status, reason or "Forbidden", message, is_quota="exceeded quota" in message)
    if status == 429 or status >= 500:
        return KubeUnavailable(status, reason, message, retry_after=_seconds(retry_after))
    if status == 410:
        return WatchExpired(status, reason or "Gone", message)
    return KubeError(status, reason, message)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
