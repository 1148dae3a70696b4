"""HTTP surface of the fake apiserver: URL routing, discovery documents, and `Status` error responses.

Paths follow kube-apiserver: `/api/v1/...` for the core group, `/apis/<group>/<version>/...` for named
groups; `namespaces/<ns>/<plural>[/<name>[/<subresource>]]` or a cluster-wide `<plural>` list. Each
request is counted and checked against armed faults before it reaches `Handlers`. Anything unknown is
a 404 `Status`, as the real server answers.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.simulate import kube_status
from app.simulate.kube_faults import FaultBook
from app.simulate.kube_handlers import PATCH_TYPES, Call, Handlers, unsupported_patch_type
from app.simulate.kube_resources import GROUPS, SUBRESOURCES, ResourceType, resource_type
from app.simulate.kube_selectors import object_filter
from app.simulate.kube_status import ApiError
from app.simulate.kube_watch import WatchRequest, open_stream

log = logging.getLogger(__name__)

KUBE_VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_NOT_FOUND = ApiError(404, "the server could not find the requested resource", "NotFound")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    payload = json.dumps(body, separators=(",", ":")).encode()
    return Response(payload, status_code=status, media_type="application/json", headers=headers)


def error_response(error: ApiError) -> Response:
    return json_response(error.code, error.to_status(), error.headers or None)


def _resource_list(group_version: str, table: dict[str, ResourceType]) -> dict[str, Any]:
    resources = []
    for rtype in table.values():
        resources.append(
            {
                "name": rtype.plural,
                "singularName": rtype.kind.lower(),
                "namespaced": True,
                "kind": rtype.kind,
                "verbs": list(rtype.verbs),
            }
        )
        for sub in sorted(SUBRESOURCES.get(rtype.plural, ())):
            kind = "Binding" if sub == "binding" else rtype.kind
            verbs = {"binding": ["create"], "log": ["get"]}.get(sub, ["get", "patch", "update"])
            resources.append(
                {
                    "name": f"{rtype.plural}/{sub}",
                    "singularName": "",
                    "namespaced": True,
                    "kind": kind,
                    "verbs": verbs,
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _group(name: str) -> dict[str, Any]:
    version = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"name": name, "versions": [version], "preferredVersion": version}


def _api_group(name: str) -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}


def discovery(path: str, server_address: str) -> dict[str, Any] | None:
    """The discovery documents clients fetch before talking to a group (None if `path` is not one)."""
    named = [g for g in GROUPS if g]
    documents: dict[str, Callable[[], dict[str, Any]]] = {
        "/version": lambda: KUBE_VERSION,
        "/api": lambda: {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        },
        "/api/v1": lambda: _resource_list("v1", GROUPS[""]),
        "/apis": lambda: {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in named]},
    }
    for group in named:
        documents[f"/apis/{group}"] = functools.partial(_api_group, group)
        documents[f"/apis/{group}/v1"] = functools.partial(_resource_list, f"{group}/v1", GROUPS[group])
    document = documents.get(path.rstrip("/") or "/")
    return document() if document else None


def parse_path(
    method: str, path: str, query: dict[str, str]
) -> tuple[str, ResourceType, str | None, str, str]:
    """Split a resource URL into (verb, type, namespace, name, subresource); 404 if it names nothing."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis" and parts[2] == "v1":
        group, rest = parts[1], parts[3:]
    else:
        raise _NOT_FOUND
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    rtype = resource_type(rest[0], group) if rest else None
    if rtype is None or len(rest) > 3 or (namespace is None and (len(rest) > 1 or method != "GET")):
        raise _NOT_FOUND
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if sub and sub not in SUBRESOURCES.get(rtype.plural, ()):
        raise _NOT_FOUND
    return _verb(method, bool(name), sub, query), rtype, namespace, name, sub


def _verb(method: str, has_name: bool, sub: str, query: dict[str, str]) -> str:
    if sub == "binding":
        verbs = {"POST": "create"}
    elif sub == "log":
        verbs = {"GET": "get"}
    elif has_name:
        verbs = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    else:
        watching = query.get("watch", "").lower() in ("true", "1")
        verbs = {"GET": "watch" if watching else "list", "POST": "create", "DELETE": "deletecollection"}
    if method not in verbs:
        raise ApiError(
            405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
        )
    return verbs[method]


async def _read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise kube_status.bad_request(
            f"couldn't get version/kind; json parse error: {str(error)[:200]}"
        ) from None


class KubeHttp:
    """Starlette application wiring requests to `Handlers`, with fault injection and counting."""

    def __init__(
        self, handlers: Handlers, faults: FaultBook, *, bookmark_interval: float, watch_timeout: float
    ) -> None:
        self.handlers = handlers
        self.faults = faults
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.server_address = "127.0.0.1:0"
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        self.app = Starlette(routes=[Route("/{path:path}", self.endpoint, methods=methods)])

    async def endpoint(self, request: Request) -> Response:
        try:
            return await self._serve(request)
        except ApiError as error:
            return error_response(error)
        except (RecursionError, ValueError, TypeError, KeyError, AttributeError) as error:
            # Hostile input that slipped past validation must still get a Status, never a bare 500 page.
            log.warning("fake apiserver failed on %s %s: %r", request.method, request.url.path, error)
            return error_response(
                kube_status.internal_error(f"Internal error occurred: {type(error).__name__}")
            )

    async def _serve(self, request: Request) -> Response:
        path = request.url.path
        if path in ("/healthz", "/readyz", "/livez"):
            return Response(b"ok", media_type="text/plain")
        if request.method == "GET" and (document := discovery(path, self.server_address)) is not None:
            return json_response(200, document)
        query = dict(request.query_params)
        verb, rtype, namespace, name, sub = parse_path(request.method, path, query)
        resource = f"{rtype.plural}/{sub}" if sub else rtype.plural
        fault = self.faults.take(verb, resource, user_agent=request.headers.get("user-agent", ""))
        if fault is not None:
            await asyncio.sleep(fault.delay)
            if (error := fault.error(verb, resource, namespace or "", name)) is not None:
                raise error
        content_type = request.headers.get("content-type", "application/json")
        if verb == "patch" and content_type.split(";")[0].strip() not in PATCH_TYPES:
            # Checked before the body is parsed, as the apiserver does (YAML apply patches are not JSON).
            raise unsupported_patch_type()
        call = Call(
            verb,
            rtype,
            namespace,
            name,
            sub,
            query,
            await _read_json(request),
            request.headers.get("content-type", "application/json"),
        )
        if verb == "watch":
            return self._watch(call)
        if sub == "log":
            return Response(self.handlers.log(call), media_type="text/plain")
        status, body = self._dispatch(call)
        return json_response(status, body)

    def _dispatch(self, call: Call) -> tuple[int, Any]:
        h = self.handlers
        if call.subresource == "binding":
            return h.bind(call)
        table = {
            "get": h.get,
            "list": h.list,
            "create": h.create,
            "update": h.update,
            "patch": h.patch,
            "delete": h.delete,
            "deletecollection": h.delete_collection,
        }
        return table[call.verb](call)

    def _watch(self, call: Call) -> Response:
        timeout = call.query.get("timeoutSeconds", "")
        try:
            timeout_seconds = float(timeout) if timeout else self.watch_timeout
        except ValueError:
            raise kube_status.bad_request(f"invalid timeoutSeconds: {timeout[:32]!r}") from None
        request = WatchRequest(
            rtype=call.rtype,
            namespace=call.namespace,
            matches=object_filter(
                call.query.get("labelSelector"), call.query.get("fieldSelector"), call.rtype.plural
            ),
            resource_version=call.query.get("resourceVersion"),
            timeout_seconds=timeout_seconds,
            allow_bookmarks=call.query.get("allowWatchBookmarks", "").lower() in ("true", "1"),
            bookmark_interval=self.bookmark_interval,
        )
        return StreamingResponse(open_stream(self.handlers.store, request), media_type="application/json")
