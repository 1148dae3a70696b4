"""Request handling of the fake apiserver, independent of the HTTP framework.

`Handlers` receives parsed requests (verb, resource type, namespace, name, query, body) and returns
`(status code, JSON body)`. It implements the apiserver's semantics on top of `Store`: validation on
every write, optimistic concurrency (a stale `metadata.resourceVersion` is a 409 Conflict), the three
patch types, the pods/status and pods/binding subresources, graceful pod deletion, and paginated,
selector-filtered lists. `pods/log` serves what the simulated kubelet's scripts print
(`app.simulate.kubelet_script`), as the kubelet would through the apiserver.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from app.simulate import kube_names, kube_pods, kube_status
from app.simulate.kube_patch import PatchError, json_patch, merge_patch, strategic_merge
from app.simulate.kube_resources import ResourceType
from app.simulate.kube_schema import definition_for_kind
from app.simulate.kube_selectors import object_filter
from app.simulate.kube_status import ApiError, Cause
from app.simulate.kube_store import Clock, Store
from app.simulate.kube_validation import (
    pod_rule_causes,
    schema_causes,
    validate_metadata,
    validate_pod,
    validate_pod_update,
)
from app.simulate.kubelet_script import ScriptError, script_for

Json = dict[str, Any]
Result = tuple[int, Json]

PATCH_TYPES = (
    "application/strategic-merge-patch+json",
    "application/merge-patch+json",
    "application/json-patch+json",
)
_EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results."
)


@dataclass(frozen=True)
class Call:
    """One parsed API request."""

    verb: str
    rtype: ResourceType
    namespace: str | None
    name: str = ""
    subresource: str = ""
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    content_type: str = "application/json"


def _success(rtype: ResourceType, name: str, uid: str) -> Json:
    details = {"name": name, "kind": rtype.plural, "uid": uid}
    if rtype.group:
        details["group"] = rtype.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


class Handlers:
    """CRUD, patch, list and delete semantics over a `Store`."""

    def __init__(self, store: Store, *, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # ---- validation -------------------------------------------------------------------------------

    def _check(self, rtype: ResourceType, obj: Json, causes: list[Cause] | None = None) -> None:
        if causes is None:
            if rtype.kind == "Pod":
                causes = validate_pod(obj)
            else:
                causes = schema_causes(obj, rtype.schema_file) or validate_metadata(
                    obj.get("metadata") or {}, "metadata", name_rule=kube_names.dns1123_subdomain
                )
        if causes:
            name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get(
                "generateName", ""
            )
            raise kube_status.invalid(rtype.kind, name, causes, rtype.group)

    def _body(self, call: Call) -> Json:
        body = call.body
        if not isinstance(body, dict):
            raise kube_status.bad_request(f"the body of the request was not a {call.rtype.kind} object")
        for key, expected in (("kind", call.rtype.kind), ("apiVersion", call.rtype.api_version)):
            if body.get(key) not in (None, expected):
                raise kube_status.bad_request(f"{key} {body[key]!r} does not match the expected {expected!r}")
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise kube_status.bad_request("metadata must be an object")
        namespace = (meta or {}).get("namespace")
        if namespace not in (None, "", call.namespace):
            raise kube_status.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        return body

    # ---- verbs ------------------------------------------------------------------------------------

    def create(self, call: Call) -> Result:
        body = self._body(call)
        obj = {k: v for k, v in body.items() if k != "status" or call.rtype.kind != "Pod"}
        obj["metadata"] = {k: v for k, v in (body.get("metadata") or {}).items() if k != "resourceVersion"}
        obj.setdefault("apiVersion", call.rtype.api_version)
        obj.setdefault("kind", call.rtype.kind)
        if call.rtype.kind == "Pod":
            # Strict decoding of what was sent (unknown fields, wrong types), then the apiserver's rules on
            # the defaulted pod. Defaults only add fields the schema allows (tests/simulate holds them to
            # it), so the schema, most of a create's cost, is not checked a second time.
            self._check(call.rtype, obj, schema_causes(obj))
            obj = kube_pods.apply_defaults(obj)
            self._check(call.rtype, obj, pod_rule_causes(obj))
        else:
            self._check(call.rtype, obj)
        return 201, self.store.create(call.rtype, call.namespace or "", obj)

    def get(self, call: Call) -> Result:
        return 200, self._existing(call)

    def _existing(self, call: Call) -> Json:
        obj = self.store.get(call.rtype.plural, call.namespace or "", call.name)
        if obj is None:
            raise kube_status.not_found(call.rtype.plural, call.name, call.rtype.group)
        return obj

    def list(self, call: Call) -> Result:
        matches = object_filter(
            call.query.get("labelSelector"), call.query.get("fieldSelector"), call.rtype.plural
        )
        objects, version = self.store.list(call.rtype.plural, call.namespace)
        start_after, version = self._continue_from(call.query.get("continue"), version)
        items = [o for o in objects if matches(o) and _key(o) > start_after]
        metadata: Json = {"resourceVersion": str(version)}
        limit = _int_param(call.query, "limit")
        if limit and len(items) > limit:
            token = json.dumps({"rv": version, "start": _key(items[limit - 1])}).encode()
            metadata["continue"] = base64.urlsafe_b64encode(token).decode()
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        # Like the real apiserver, list items carry no kind/apiVersion; the List does.
        slim = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        return 200, {
            "kind": call.rtype.list_kind,
            "apiVersion": call.rtype.api_version,
            "metadata": metadata,
            "items": slim,
        }

    def _continue_from(self, token: str | None, version: int) -> tuple[str, int]:
        if not token:
            return "", version
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
            start, token_version = str(decoded["start"]), int(decoded["rv"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise kube_status.bad_request(f"continue key is not valid: {token[:64]!r}") from None
        if token_version < self.store.compacted_version:
            raise ApiError(410, _EXPIRED_CONTINUE, "Expired")
        return start, token_version

    def update(self, call: Call) -> Result:
        body = copy.deepcopy(self._body(call))
        meta = body.setdefault("metadata", {})
        if meta.get("name") not in (None, call.name):
            raise kube_status.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({call.name})"
            )
        meta["name"] = call.name
        old = self._existing(call)
        if not meta.get("resourceVersion") and call.rtype.requires_resource_version:
            cause = Cause("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")
            raise kube_status.invalid(call.rtype.kind, call.name, [cause], call.rtype.group)
        return self._store_update(call, old, body)

    def patch(self, call: Call) -> Result:
        old = self._existing(call)
        content_type = call.content_type.split(";")[0].strip()
        try:
            if content_type == "application/merge-patch+json":
                patched = merge_patch(old, call.body)
            elif content_type == "application/json-patch+json":
                patched = json_patch(old, call.body)
            elif content_type == "application/strategic-merge-patch+json":
                patched = strategic_merge(old, call.body, definition_for_kind(call.rtype.kind))
            else:
                raise unsupported_patch_type()
        except PatchError as error:
            raise ApiError(422, str(error), "Invalid") from None
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise ApiError(422, "the patch removed the object's metadata", "Invalid")
        return self._store_update(call, old, patched)

    def _store_update(self, call: Call, old: Json, new: Json) -> Result:
        """Shared tail of update and patch: preconditions, immutable fields, validation, write."""
        meta, old_meta = new["metadata"], old["metadata"]
        if meta.get("resourceVersion") not in (None, "", old_meta["resourceVersion"]):
            raise kube_status.conflict(call.rtype.plural, call.name, call.rtype.group)
        if meta.get("uid") not in (None, "", old_meta["uid"]):
            _check_preconditions(call, old, {"uid": meta["uid"]})
        for key in (
            "uid",
            "creationTimestamp",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)  # server-managed: a client cannot set it
        meta["name"] = call.name
        new["apiVersion"], new["kind"] = call.rtype.api_version, call.rtype.kind
        if call.rtype.kind == "Pod":
            new = self._pod_update(call, old, new)
        else:
            self._check(call.rtype, new)
        if new == old:
            return 200, old  # a no-op write does not bump resourceVersion, as in the apiserver
        return 200, self.store.replace(call.rtype, call.namespace or "", new)

    def _pod_update(self, call: Call, old: Json, new: Json) -> Json:
        if call.subresource == "status":
            new = kube_pods.keep_spec(old, new)
            self._check(call.rtype, new, schema_causes(new))
            return new
        new = kube_pods.keep_status(old, new)
        self._check(call.rtype, new, validate_pod(new) or validate_pod_update(old, new))
        return new

    def bind(self, call: Call) -> Result:
        pod = self._existing(call)
        self.store.replace(
            call.rtype, call.namespace or "", kube_pods.bind(pod, call.body, now=self.store.now())
        )
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def log(self, call: Call) -> bytes:
        """``GET pods/{name}/log``: a container's scripted output, with the kubelet's query semantics.

        ``tailLines`` first, then ``limitBytes`` from the start of that tail (so a cut drops the end, as
        the kubelet's does). 404 when the pod is gone; 400 for an unknown container, one that has not
        started, or ``previous`` without a previous instance — worded as the real apiserver words them.
        """
        pod = self._existing(call)
        container = self._log_container(pod, call.query.get("container", ""))
        status = _container_status(pod, container)
        state = status.get("state") or {}
        if call.query.get("previous", "").lower() in ("true", "1"):
            if not (status.get("lastState") or {}).get("terminated"):
                raise kube_status.bad_request(
                    f'previous terminated container "{container}" in pod "{call.name}" not found'
                )
        elif not (state.get("running") or state.get("terminated")):
            reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
            raise kube_status.bad_request(
                f'container "{container}" in pod "{call.name}" is waiting to start: {reason}'
            )
        try:
            output = script_for(pod).containers[container].output(container)
        except (ScriptError, KeyError):
            output = b""  # a malformed script prints nothing; the kubelet reports it as an event
        tail = _int_param(call.query, "tailLines")
        limit = _int_param(call.query, "limitBytes")
        if (tail is not None and tail < 0) or (limit is not None and limit <= 0):
            raise kube_status.bad_request("tailLines must be >= 0 and limitBytes > 0")
        if tail is not None:
            lines = output.splitlines(keepends=True)
            output = b"".join(lines[len(lines) - tail :]) if tail else b""
        return output[:limit] if limit is not None else output

    def _log_container(self, pod: Json, name: str) -> str:
        spec = pod.get("spec") or {}
        names = [c["name"] for key in ("initContainers", "containers") for c in spec.get(key) or []]
        if not name and len(spec.get("containers") or []) == 1:
            return str(spec["containers"][0]["name"])
        pod_name = pod["metadata"]["name"]
        if not name:
            raise kube_status.bad_request(
                f"a container name must be specified for pod {pod_name}, choose one of: {names}"
            )
        if name not in names:
            raise kube_status.bad_request(f"container {name} is not valid for pod {pod_name}")
        return name

    def delete(self, call: Call) -> Result:
        options = call.body if isinstance(call.body, dict) else {}
        preconditions = options.get("preconditions") or {}
        if not isinstance(preconditions, dict):
            raise kube_status.bad_request("DeleteOptions.preconditions must be an object")
        obj = self._existing(call)
        _check_preconditions(call, obj, preconditions)
        if call.rtype.kind != "Pod":
            self.store.delete(call.rtype, call.namespace or "", call.name)
            return 200, _success(call.rtype, call.name, obj["metadata"]["uid"])
        requested = _int_param(call.query, "gracePeriodSeconds", options.get("gracePeriodSeconds"))
        grace = kube_pods.grace_seconds(obj, requested)
        marked = kube_pods.mark_deleting(obj, grace=grace, now=kube_pods.utc_now(self.clock()))
        if marked is None:
            return 200, obj
        stored = self.store.replace(call.rtype, call.namespace or "", marked)
        if grace == 0:
            # As in the apiserver's registry, even an immediate delete first writes the deletion mark
            # (watchers see MODIFIED with deletionTimestamp, then DELETED); the reply is the last state.
            return 200, self.store.delete(call.rtype, call.namespace or "", call.name)
        return 200, stored

    def delete_collection(self, call: Call) -> Result:
        _, listed = self.list(Call("list", call.rtype, call.namespace, query=call.query))
        deleted = []
        for item in listed["items"]:
            item_call = Call(
                "delete",
                call.rtype,
                item["metadata"]["namespace"],
                item["metadata"]["name"],
                query=call.query,
            )
            deleted.append(self.delete(item_call)[1])
        return 200, {**listed, "items": deleted}


def unsupported_patch_type() -> ApiError:
    accepted = ", ".join(PATCH_TYPES)
    message = f"the body of the request was in an unknown format - accepted media types include: {accepted}"
    return ApiError(415, message, "UnsupportedMediaType")


def _container_status(pod: Json, name: str) -> Json:
    status = pod.get("status") or {}
    entries = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return next((s for s in entries if isinstance(s, dict) and s.get("name") == name), {})


def _key(obj: Json) -> str:
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


def _int_param(query: dict[str, str], key: str, fallback: Any = None) -> int | None:
    raw = query.get(key, fallback)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise kube_status.bad_request(f"invalid value for {key}: {str(raw)[:32]!r}") from None


def _check_preconditions(call: Call, obj: Json, preconditions: Json) -> None:
    meta = obj["metadata"]
    uid, version = preconditions.get("uid"), preconditions.get("resourceVersion")
    if uid and uid != meta["uid"]:
        why = f"Precondition failed: UID in precondition: {uid}, UID in object meta: {meta['uid']}"
        raise kube_status.conflict(call.rtype.plural, call.name, call.rtype.group, why=why)
    if version and version != meta["resourceVersion"]:
        why = (
            f"Precondition failed: ResourceVersion in precondition: {version}, "
            f"ResourceVersion in object meta: {meta['resourceVersion']}"
        )
        raise kube_status.conflict(call.rtype.plural, call.name, call.rtype.group, why=why)
