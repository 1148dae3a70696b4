"""The fake apiserver's storage: objects, one global resourceVersion, a bounded event history, watchers.

Like etcd behind kube-apiserver, every write bumps a single cluster-wide resourceVersion and appends an
event (ADDED / MODIFIED / DELETED) to a bounded history; a watch from resourceVersion N replays the
events after N, or fails with 410 Expired once N has fallen out of the window, which is what makes
clients re-list. Stored dicts are never mutated in place (each write stores a new dict), so readers
may serialise them outside the lock. Writes come from the HTTP handlers (server thread) and from test
helpers (test thread); a lock serialises them and watchers are woken on their own event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.simulate import kube_status
from app.simulate.kube_resources import ResourceType

Key = tuple[str, str, str]  # (plural, namespace, name)
Clock = Callable[[], float]


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StoredEvent:
    """One change in the history; `previous` lets selector-filtered watches see objects leave the set."""

    type: str
    resource: str
    namespace: str
    obj: dict[str, Any]
    previous: dict[str, Any] | None
    resource_version: int


@dataclass(eq=False)
class Watcher:
    """A live watch: events for its resource/namespace are queued on the watch's own event loop."""

    resource: str
    namespace: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[StoredEvent | None] = field(default_factory=asyncio.Queue)

    def wants(self, event: StoredEvent) -> bool:
        return event.resource == self.resource and self.namespace in (None, event.namespace)

    def push(self, event: StoredEvent | None) -> None:
        # RuntimeError: the watch's loop has closed, so nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


class Store:
    """Thread-safe object storage with apiserver resourceVersion semantics."""

    def __init__(self, *, clock: Clock, history_size: int = 1000) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._objects: dict[Key, dict[str, Any]] = {}
        self._history: deque[StoredEvent] = deque(maxlen=history_size)
        self._watchers: set[Watcher] = set()
        self.resource_version = 0
        self.compacted_version = 0  # watches from before this version get 410 Expired
        # Every create accepted, in order: (resource, namespace, name). Tests count duplicates over a
        # whole run here; objects deleted since are still in it.
        self.created: list[tuple[str, str, str]] = []

    def now(self) -> str:
        return rfc3339(self._clock())

    # ---- reads ----------------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get((resource, namespace, name))

    def list(self, resource: str, namespace: str | None) -> tuple[list[dict[str, Any]], int]:
        """All objects of a type (sorted by namespace, name) and the resourceVersion they are current at."""
        with self._lock:
            keys = sorted(k for k in self._objects if k[0] == resource and namespace in (None, k[1]))
            return [self._objects[k] for k in keys], self.resource_version

    # ---- writes ---------------------------------------------------------------------------------

    def create(self, rtype: ResourceType, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generated_name(rtype.plural, namespace, meta["generateName"])
            key = (rtype.plural, namespace, meta["name"])
            if key in self._objects:
                raise kube_status.already_exists(rtype.plural, meta["name"], rtype.group)
            obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=self.now())
            meta.pop("deletionTimestamp", None)
            self.created.append(key)
            return self._write(key, obj, "ADDED", None)

    def replace(self, rtype: ResourceType, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new version of an existing object; the caller has done the concurrency check."""
        with self._lock:
            key = (rtype.plural, namespace, obj["metadata"]["name"])
            previous = self._objects.get(key)
            if previous is None:
                raise kube_status.not_found(rtype.plural, key[2], rtype.group)
            return self._write(key, obj, "MODIFIED", previous)

    def delete(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            key = (rtype.plural, namespace, name)
            previous = self._objects.pop(key, None)
            if previous is None:
                raise kube_status.not_found(rtype.plural, name, rtype.group)
            obj = copy.deepcopy(previous)
            return self._record(key, obj, "DELETED", previous)

    def _write(
        self, key: Key, obj: dict[str, Any], kind: str, previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        self._objects[key] = obj
        return self._record(key, obj, kind, previous)

    def _record(
        self, key: Key, obj: dict[str, Any], kind: str, previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        event = StoredEvent(kind, key[0], key[1], obj, previous, self.resource_version)
        if len(self._history) == self._history.maxlen:
            self.compacted_version = max(self.compacted_version, self._history[0].resource_version)
        self._history.append(event)
        for watcher in self._watchers:
            if watcher.wants(event):
                watcher.push(event)
        return obj

    def _generated_name(self, resource: str, namespace: str, prefix: str) -> str:
        # The apiserver appends 5 random characters and retries on collision.
        while True:
            name = prefix[:58] + uuid.uuid4().hex[:5]
            if (resource, namespace, name) not in self._objects:
                return name

    # ---- watch support --------------------------------------------------------------------------

    # builtins.list: the method `list` above shadows the type inside this class.
    def subscribe(self, watcher: Watcher, since: int) -> builtins.list[StoredEvent]:
        """Register `watcher` and return the history after `since`; 410 Expired if it is gone."""
        with self._lock:
            if since < self.compacted_version:
                raise kube_status.expired(since, self.compacted_version)
            self._watchers.add(watcher)
            return [e for e in self._history if e.resource_version > since and watcher.wants(e)]

    def subscribe_current(self, watcher: Watcher) -> tuple[builtins.list[dict[str, Any]], int]:
        """Register `watcher` and return the current objects it covers (a watch without resourceVersion)."""
        with self._lock:
            self._watchers.add(watcher)
            objects = [
                o
                for k, o in self._objects.items()
                if k[0] == watcher.resource and watcher.namespace in (None, k[1])
            ]
            return objects, self.resource_version

    def unsubscribe(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    def close_watchers(self, resources: Iterable[str] | None = None) -> int:
        """End active watch streams (as an apiserver restart or a load balancer timeout does)."""
        with self._lock:
            closing = [w for w in self._watchers if resources is None or w.resource in resources]
            for watcher in closing:
                self._watchers.discard(watcher)
                watcher.push(None)
            return len(closing)

    def expire_history(self) -> int:
        """Compact: forget all history, so any watch from an older resourceVersion gets 410 Expired."""
        with self._lock:
            self.resource_version += 1  # like etcd compaction, the current version moves past the old ones
            self.compacted_version = self.resource_version
            self._history.clear()
            return self.compacted_version
