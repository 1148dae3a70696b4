"""Watch: one list+watch on our pods, kept as a slim in-memory index of ``PodView``.

Input: the Kubernetes API (label selector: our job-uuid label and controller id). Output: the index
(``has(uuid)``, ``live_uuids()``) for intake and admission, and a callback per changed pod for the
lifecycle. Resource versions are kept by the apiserver for a few minutes only, so a 410 Gone — or any
broken stream — means: list again, then watch from the list's version. Nothing is missed that way,
because the lifecycle decides from the *current* pod, not from the event.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from app.errors import KubeError, WatchExpired
from app.kube import KubeGateway
from app.metrics import Metrics
from app.podview import PodView
from podspec.metadata import CONTROLLER_ID_LABEL, JOB_UUID_LABEL

log = logging.getLogger(__name__)

FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
# Back-off after the API refused a list; short, because the index is stale while we wait.
RELIST_BACKOFF_SECONDS = (0.2, 0.5, 1, 2, 5)


def label_selector(controller_id: str) -> str:
    """Ours only: pods with a job UUID and our controller id (or no id label when we have no id)."""
    if controller_id:
        return f"{JOB_UUID_LABEL},{CONTROLLER_ID_LABEL}={controller_id}"
    return f"{JOB_UUID_LABEL},!{CONTROLLER_ID_LABEL}"


class PodWatch:
    def __init__(self, *, kube: KubeGateway, controller_id: str, metrics: Metrics) -> None:
        self._kube = kube
        self._selector = label_selector(controller_id)
        self._metrics = metrics
        self.pods: dict[str, PodView] = {}  # by pod name
        self._by_uuid: dict[str, str] = {}
        # Kept up to date in _apply: recounting every pod on every event made a burst quadratic.
        self._phases: Counter[str] = Counter()
        self._phase_gauges: dict[str, Any] = {}  # the gauge's child per phase: ``labels()`` per event is slow
        self.synced = asyncio.Event()
        self._listeners: list[Callable[[PodView], None]] = []

    def subscribe(self, listener: Callable[[PodView], None]) -> None:
        self._listeners.append(listener)

    def has(self, uuid: str) -> bool:
        return uuid in self._by_uuid

    def live_uuids(self) -> Iterable[str]:
        return (
            pod.job_uuid for pod in self.pods.values() if pod.job_uuid and pod.phase not in FINISHED_PHASES
        )

    def live_count(self) -> int:
        """Unfinished pods (kept incrementally: admission asks on every pass)."""
        return len(self.pods) - self._phases["Succeeded"] - self._phases["Failed"]

    def sizes(self) -> dict[str, int]:
        """How much the index holds (a memory test reads it)."""
        return {"pods": len(self.pods), "jobs": len(self._by_uuid)}

    def pod_for(self, uuid: str) -> PodView | None:
        name = self._by_uuid.get(uuid)
        return self.pods.get(name) if name else None

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._relist()
                failures = 0
                await self._follow(version)
            except WatchExpired:
                self._metrics.watch_restarts.labels("expired").inc()
                log.info("pod watch: resource version expired; re-listing")
            except KubeError as exc:
                self._metrics.watch_restarts.labels("error").inc()
                delay = RELIST_BACKOFF_SECONDS[min(failures, len(RELIST_BACKOFF_SECONDS) - 1)]
                failures += 1
                log.warning("pod watch: %s; re-listing in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _relist(self) -> str:
        items, version = await self._kube.list_pods(self._selector)
        seen: set[str] = set()
        for raw in items:
            view = self._view(raw)
            if view is not None:
                seen.add(view.name)
                self._apply(view)
        for name in set(self.pods) - seen:  # deleted while we were not watching
            self._apply(replace(self.pods[name], deleted=True))
        self.synced.set()
        self._update_gauges()
        return version

    async def _follow(self, version: str) -> None:
        async for kind, raw in self._kube.watch_pods(self._selector, version):
            if kind == "BOOKMARK":
                continue
            view = self._view(raw, deleted=kind == "DELETED")
            if view is not None:
                self._apply(view)
                self._update_gauges()
        self._metrics.watch_restarts.labels("closed").inc()

    def _view(self, raw: dict[str, Any], *, deleted: bool = False) -> PodView | None:
        try:
            return PodView.from_raw(raw, deleted=deleted)
        except ValueError as exc:
            log.warning("pod watch: skipped a malformed pod object: %s", exc)
            return None

    def _apply(self, view: PodView) -> None:
        previous = self.pods.get(view.name)
        if previous is not None:
            self._phases[previous.phase or "Unknown"] -= 1
        if not view.deleted:
            self._phases[view.phase or "Unknown"] += 1
        if view.deleted:
            self.pods.pop(view.name, None)
            if view.job_uuid and self._by_uuid.get(view.job_uuid) == view.name:
                del self._by_uuid[view.job_uuid]
        else:
            self.pods[view.name] = view
            if view.job_uuid:
                self._by_uuid[view.job_uuid] = view.name
        for listener in self._listeners:
            listener(view)

    def _update_gauges(self) -> None:
        phases = {"Pending": 0, "Running": 0, "Succeeded": 0, "Failed": 0, "Unknown": 0} | self._phases
        for phase, count in phases.items():
            gauge = self._phase_gauges.get(phase)
            if gauge is None:
                gauge = self._phase_gauges[phase] = self._metrics.pods_by_phase.labels(phase)
            gauge.set(count)
