"""The watch stream: newline-delimited JSON events, as `?watch=true` returns them.

Without a resourceVersion (or with "0") the stream starts with a synthetic ADDED per current object,
then follows changes. With resourceVersion N it replays the history after N; if N is older than the
history window the stream carries a single ERROR event with a 410 Expired `Status` (HTTP 200, exactly
like kube-apiserver) and ends — the client must re-list. A selector-filtered watch sees an object that
stops matching as DELETED and one that starts matching as ADDED. BOOKMARK events carry the newest
resourceVersion this watch has seen, so a client can resume from there without replaying.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.simulate import kube_status
from app.simulate.kube_resources import ResourceType
from app.simulate.kube_status import ApiError
from app.simulate.kube_store import Store, StoredEvent, Watcher
from app.waiting import within

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class WatchRequest:
    """What the client asked for, parsed from the query string."""

    rtype: ResourceType
    namespace: str | None
    matches: Predicate
    resource_version: str | None
    timeout_seconds: float
    allow_bookmarks: bool
    bookmark_interval: float


def _line(event_type: str, obj: Mapping[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


def translate(event: StoredEvent, matches: Predicate) -> str | None:
    """The event type this watch sees for a stored change, given its selector (None = not shown)."""
    now = matches(event.obj)
    if event.type == "ADDED":
        return "ADDED" if now else None
    if event.type == "DELETED":
        return "DELETED" if now else None
    before = event.previous is not None and matches(event.previous)
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    return "DELETED" if before else None


def shown(event: StoredEvent, event_type: str) -> Mapping[str, Any]:
    """The object a watch sends: for one that left the selected set, its last state that matched (the
    apiserver sends the previous object there, so a client sees the labels that had selected it)."""
    if event_type == "DELETED" and event.type == "MODIFIED" and event.previous is not None:
        return event.previous
    return event.obj


def _start(store: Store, watcher: Watcher, request: WatchRequest) -> tuple[list[bytes], int]:
    """Register the watcher; return the opening lines (initial state or replay) and the version reached."""
    version = request.resource_version
    if version in (None, "", "0"):
        objects, current = store.subscribe_current(watcher)
        return [_line("ADDED", o) for o in objects if request.matches(o)], current
    try:
        since = int(version)
    except ValueError:
        raise kube_status.bad_request(f'invalid resource version "{version}"') from None
    replay = store.subscribe(watcher, since)
    lines = [_line(t, shown(e, t)) for e in replay if (t := translate(e, request.matches))]
    return lines, max([since, *(e.resource_version for e in replay)])


def open_stream(store: Store, request: WatchRequest) -> AsyncIterator[bytes]:
    """Register the watch now (so a bad resourceVersion is a plain 400) and return its event lines.

    Must run on the event loop that will consume the stream: watch events are queued on that loop.
    """
    watcher = Watcher(request.rtype.plural, request.namespace, asyncio.get_running_loop())
    try:
        lines, seen = _start(store, watcher, request)
    except ApiError as error:
        if error.code != 410:
            raise
        return _single(_line("ERROR", error.to_status()))
    return _run(store, watcher, request, lines, seen)


async def _single(line: bytes) -> AsyncIterator[bytes]:
    yield line


async def _run(
    store: Store, watcher: Watcher, request: WatchRequest, lines: list[bytes], seen: int
) -> AsyncIterator[bytes]:
    try:
        for line in lines:
            yield line
        async for line in _follow(watcher, request, seen):
            yield line
    finally:
        store.unsubscribe(watcher)


async def _follow(watcher: Watcher, request: WatchRequest, seen: int) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + request.timeout_seconds
    interval = request.bookmark_interval if request.allow_bookmarks else float("inf")
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = await within(watcher.queue.get(), min(left, interval))
        except TimeoutError:
            if time.monotonic() < deadline and request.allow_bookmarks:
                yield _bookmark(request.rtype, seen)
            continue
        if event is None:
            return  # dropped by the server (FakeKubeAPI.drop_watches)
        seen = event.resource_version
        if event_type := translate(event, request.matches):
            yield _line(event_type, shown(event, event_type))


def _bookmark(rtype: ResourceType, version: int) -> bytes:
    obj = {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": {"resourceVersion": str(version)}}
    return _line("BOOKMARK", obj)
