"""In-memory stand-ins for the lifecycle's collaborators, for stage tests (cosmicpython's FakeRepository).

``FakeGateway`` implements the ``app.kube.KubeGateway`` protocol over a dict of raw pods, with a
change log so a real ``PodWatch`` can list and watch it, one-shot error injection per method, and a
record of every call. ``FakeJobStates`` and ``FakeFailer`` have the methods of ``GraphQLClient``
and ``JobFailer`` that the lifecycle uses, and record their calls. Nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from app.errors import AlreadyExists, BuildkiteError, KubeError, NotFound

Json = dict[str, Any]


class FakeGateway:
    """Pods, events, pod templates and leases in memory; every write bumps one resourceVersion."""

    namespace = "buildkite"

    def __init__(self) -> None:
        self.pods: dict[str, Json] = {}
        self.events: dict[str, list[Json]] = defaultdict(list)
        self.templates: dict[str, Json] = {}
        self.leases: dict[str, Json] = {}
        self.logs: dict[tuple[str, str], bytes] = {}  # (pod, container) -> what it printed
        self.calls: list[tuple[str, Any]] = []
        self.faults: dict[str, list[KubeError]] = defaultdict(list)
        self._log: list[tuple[int, str, Json]] = []  # (resourceVersion, type, object) for watchers
        self._versions = itertools.count(1000)
        self._version = 999
        self._changed = asyncio.Event()
        self._uids = itertools.count(1)

    # --- test helpers ---------------------------------------------------------------------------------

    def put_pod(self, raw: Json) -> Json:
        """Store ``raw`` as the pod's new state (as the kubelet or a user would write it)."""
        obj = copy.deepcopy(raw)
        name = obj["metadata"]["name"]
        kind = "MODIFIED" if name in self.pods else "ADDED"
        self.pods[name] = obj
        self._emit(kind, obj)
        return obj

    def remove_pod(self, name: str) -> None:
        """The pod vanishes without us (evicted and garbage collected, deleted by a person)."""
        obj = self.pods.pop(name)
        self._emit("DELETED", obj)

    def fail_next(self, method: str, error: KubeError) -> None:
        self.faults[method].append(error)

    def calls_of(self, method: str) -> list[Any]:
        return [args for name, args in self.calls if name == method]

    # --- KubeGateway ----------------------------------------------------------------------------------

    async def create_pod(self, manifest: Json) -> Json:
        self._enter("create_pod", manifest["metadata"]["name"])
        name = manifest["metadata"]["name"]
        if name in self.pods:
            raise AlreadyExists(409, "AlreadyExists", f'pods "{name}" already exists')
        obj = copy.deepcopy(manifest)
        obj["metadata"].setdefault("uid", f"uid-{next(self._uids)}")
        return self.put_pod(obj)

    async def delete_pod(
        self, name: str, *, uid: str | None = None, grace_seconds: int | None = None
    ) -> bool:
        self._enter("delete_pod", (name, uid, grace_seconds))
        obj = self.pods.get(name)
        if obj is None or (uid and obj["metadata"].get("uid") != uid):
            return False
        self.remove_pod(name)
        return True

    async def annotate_pod(self, name: str, annotations: Mapping[str, str | None]) -> None:
        self._enter("annotate_pod", (name, dict(annotations)))
        if name not in self.pods:
            raise NotFound(404, "NotFound", f'pods "{name}" not found')
        obj = copy.deepcopy(self.pods[name])
        current = obj["metadata"].setdefault("annotations", {})
        for key, value in annotations.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        self.put_pod(obj)

    async def get_pod_template(self, name: str) -> Json | None:
        self._enter("get_pod_template", name)
        return copy.deepcopy(self.templates.get(name))

    async def list_pods(self, label_selector: str) -> tuple[list[Json], str]:
        self._enter("list_pods", label_selector)
        return [copy.deepcopy(p) for p in self.pods.values()], str(self._version)

    async def watch_pods(self, label_selector: str, resource_version: str) -> AsyncIterator[tuple[str, Json]]:
        self._enter("watch_pods", resource_version)
        since = int(resource_version or 0)
        while True:
            changed = self._changed  # taken before reading the log, so no write can slip between
            for version, kind, obj in list(self._log):
                if version > since:
                    since = version
                    yield kind, copy.deepcopy(obj)
            await changed.wait()

    async def list_events(self, involved_name: str) -> list[Json]:
        self._enter("list_events", involved_name)
        return copy.deepcopy(self.events.get(involved_name, []))

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
        """``logs[(name, container)]``, tailLines then limitBytes as the kubelet; 404 if the pod is gone."""
        self._enter("read_pod_log", (name, container, tail_lines, limit_bytes, previous))
        if name not in self.pods:
            raise NotFound(404, "NotFound", f'pods "{name}" not found')
        lines = self.logs.get((name, container), b"").splitlines(keepends=True)
        return b"".join(lines[-tail_lines:])[:limit_bytes]

    async def get_lease(self, name: str) -> Json | None:
        self._enter("get_lease", name)
        return copy.deepcopy(self.leases.get(name))

    async def create_lease(self, lease: Json) -> Json:
        name = lease["metadata"]["name"]
        self._enter("create_lease", name)
        if name in self.leases:
            raise AlreadyExists(409, "AlreadyExists", f'leases "{name}" already exists')
        self.leases[name] = copy.deepcopy(lease)
        return copy.deepcopy(lease)

    async def replace_lease(self, name: str, lease: Json) -> Json:
        self._enter("replace_lease", name)
        if name not in self.leases:
            raise NotFound(404, "NotFound", f'leases "{name}" not found')
        self.leases[name] = copy.deepcopy(lease)
        return copy.deepcopy(lease)

    # --- internals ------------------------------------------------------------------------------------

    def _enter(self, method: str, args: Any) -> None:
        self.calls.append((method, args))
        if self.faults[method]:
            raise self.faults[method].pop(0)

    def _emit(self, kind: str, obj: Json) -> None:
        self._version = next(self._versions)
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._log.append((self._version, kind, copy.deepcopy(obj)))
        self._changed.set()
        self._changed = asyncio.Event()


class FakeJobStates:
    """``GraphQLClient.job_states`` over a dict; records the UUIDs of every request."""

    def __init__(self, states: Mapping[str, str] | None = None) -> None:
        self.states: dict[str, str] = dict(states or {})
        self.requests: list[list[str]] = []
        self.error: BuildkiteError | None = None

    async def job_states(self, uuids: Sequence[str]) -> dict[str, str]:
        self.requests.append(list(uuids))
        if self.error is not None:
            raise self.error
        return {u: self.states[u] for u in uuids if u in self.states}


class FakeFailer:
    """``JobFailer.fail`` that records every call and answers ``outcome`` (a queue, then the default)."""

    def __init__(self, outcome: str = "failed") -> None:
        self.outcome = outcome
        self.queued: list[str] = []
        self.calls: list[tuple[str, str, str]] = []  # (uuid, reason, message)
        self.probe: Callable[[], object] | None = None  # called at each fail, to look at the world then

    async def fail(self, uuid: str, *, reason: str, message: str, detected_at: float | None = None) -> str:
        self.calls.append((uuid, reason, message))
        if self.probe is not None:
            self.probe()
        return self.queued.pop(0) if self.queued else self.outcome
