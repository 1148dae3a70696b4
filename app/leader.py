"""Leader election through a ``coordination.k8s.io/v1`` Lease, the way client-go does it.

Every replica takes webhooks and creates pods (pod names make that idempotent); only the leader runs
the singleton work: the sweep and the lifecycle actions that fail jobs or delete pods. A follower
judges the Lease expired by its *own* clock — "the record has not changed for a lease duration" —
never by comparing the holder's timestamps with its own, so clock skew between nodes cannot make two
leaders. A leader that cannot renew for a whole lease duration steps down before anyone can take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from app.errors import AlreadyExists, Conflict, KubeError
from app.kube import KubeGateway

log = logging.getLogger(__name__)


def _micro_time(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        *,
        kube: KubeGateway,
        name: str,
        identity: str,
        lease_duration_seconds: float,
        renew_interval_seconds: float,
        on_change: Callable[[bool], None] = lambda leading: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._kube = kube
        self._name = name
        self.identity = identity
        self._duration = lease_duration_seconds
        self._renew = renew_interval_seconds
        self._on_change = on_change
        self._clock = clock
        self._wall = wall_clock
        self._leading = False
        self._renewed_at = 0.0  # our clock, last successful renewal
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._wakeup = asyncio.Event()

    def is_leader(self) -> bool:
        """True only while our last renewal is younger than the lease duration."""
        if self._leading and self._clock() - self._renewed_at >= self._duration:
            self._set_leading(False)
        return self._leading

    async def run(self) -> None:
        while True:
            try:
                await self.try_acquire_or_renew()
            except KubeError as exc:
                log.warning("leader election: %s", exc)
            self.is_leader()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._renew)
            self._wakeup.clear()

    async def try_acquire_or_renew(self) -> bool:
        lease = await self._kube.get_lease(self._name)
        now = self._clock()
        if lease is None:
            return await self._create()
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or self._duration)
        if holder and holder != self.identity and now - self._observed_at < duration:
            self._set_leading(False)
            return False
        return await self._update(lease, taking_over=holder != self.identity)

    async def release(self) -> None:
        """Give the Lease up at shutdown so a follower takes over at once instead of after expiry."""
        if not self._leading:
            return
        self._set_leading(False)
        with contextlib.suppress(KubeError):
            lease = await self._kube.get_lease(self._name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"].update(
                    {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro_time(self._wall())}
                )
                await self._kube.replace_lease(self._name, lease)
                log.info("leader election: released the lease")

    async def _create(self) -> bool:
        stamp = _micro_time(self._wall())
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._name},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self._duration),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        try:
            await self._kube.create_lease(lease)
        except AlreadyExists:
            return False
        self._renewed(True)
        return True

    async def _update(self, lease: dict[str, Any], *, taking_over: bool) -> bool:
        spec = dict(lease.get("spec") or {})
        stamp = _micro_time(self._wall())
        spec.update(
            {"holderIdentity": self.identity, "leaseDurationSeconds": int(self._duration), "renewTime": stamp}
        )
        if taking_over:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        try:
            await self._kube.replace_lease(self._name, {**lease, "spec": spec})
        except Conflict:
            return False  # someone else wrote first; we learn who on the next round
        self._renewed(taking_over)
        return True

    def _renewed(self, acquired: bool) -> None:
        self._renewed_at = self._clock()
        if acquired:
            log.info("leader election: %s is now the leader", self.identity)
        self._set_leading(True)

    def _set_leading(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            if not leading:
                log.info("leader election: %s is no longer the leader", self.identity)
            self._on_change(leading)
