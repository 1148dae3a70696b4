"""Leader election through a ``coordination.k8s.io/v1`` Lease, the way client-go does it.

Every replica takes webhooks; only the leader runs the singleton work (admission, the sweep, the
lifecycle actions that fail jobs or delete pods). Three durations keep two leaders from acting at once:

- a follower takes over only after the Lease record has not changed for a **lease duration** by its
  *own* clock, counted from when it first read that record — never by comparing the holder's
  timestamps with its own, so clock skew between nodes cannot make two leaders;
- the leader stops acting once a **renew deadline** (shorter than the lease duration) has passed since
  it *sent* its last successful renewal. A renewal is written when the apiserver receives it, so
  "sent" is the earliest moment a follower can have seen it: measured from the reply instead, a reply
  delayed by a slow apiserver would stretch the leader past the follower's takeover;
- the **renew interval** (client-go's retry period) is how often the leader renews and followers look.

The gap between deadline and duration absorbs clock-rate differences and work already under way.

One leadership signal: ``is_leader()`` reads the state every listener sees (``on_change``,
``wait_change``); a renew deadline that passes is published by a timer, or by the first read after it.
``status()`` says who leads and why this replica cannot take part (a Lease RBAC refuses, named as the
rule the Role lacks) for ``/readyz`` and status pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from app.errors import AlreadyExists, Conflict, Forbidden, KubeError
from app.kube import KubeGateway
from app.metrics import Metrics
from app.settings import default_renew_deadline
from app.waiting import wait_set

log = logging.getLogger(__name__)

T = TypeVar("T")

LEASE_GROUP = "coordination.k8s.io"

# The leader's URL for followers' relayed jobs (``app.relay``), kept on the Lease it holds.
LEADER_URL_ANNOTATION = "buildkite.com/leader-url"


def _leader_url(lease: dict[str, Any]) -> str | None:
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    url = annotations.get(LEADER_URL_ANNOTATION) if isinstance(annotations, dict) else None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def _micro_time(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseForbidden:
    """RBAC refused this replica ``verb`` on the leader Lease; ``rule()`` is what the Role lacks."""

    verb: str
    namespace: str
    name: str

    def rule(self) -> str:
        # RBAC cannot limit `create` by name (the object does not exist yet), so that rule has none.
        names = "" if self.verb == "create" else f', resourceNames: ["{self.name}"]'
        return (
            f'apiGroups: ["{LEASE_GROUP}"], resources: ["leases"], verbs: ["{self.verb}"]{names} '
            f'in namespace "{self.namespace}"'
        )

    def message(self) -> str:
        return (
            f'leader election: Kubernetes forbids "{self.verb}" on leases.{LEASE_GROUP} "{self.name}" in '
            f'namespace "{self.namespace}"; no replica can lead (no sweep, no pod cleanup, no failure '
            f"reports) until the Role grants: {self.rule()}"
        )


@dataclass(frozen=True)
class LeaderStatus:
    """A read-only snapshot for ``/readyz`` detail and status pages."""

    identity: str  # this replica
    is_leader: bool
    holder: str | None  # who holds the Lease, as this replica last read or wrote it; None: nobody/unknown
    leader_url: str | None  # where the holder takes relayed jobs, from its Lease
    lease: str  # "<namespace>/<name>"
    last_error: str | None  # why the last election round failed; None once a round succeeds
    forbidden: LeaseForbidden | None  # set while RBAC refuses us the Lease


class LeaderElector:
    def __init__(
        self,
        *,
        kube: KubeGateway,
        name: str,
        identity: str,
        advertise_url: str = "",
        lease_duration_seconds: float,
        renew_interval_seconds: float,
        renew_deadline_seconds: float | None = None,
        on_change: Callable[[bool], None] = lambda leading: None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        deadline = renew_deadline_seconds or default_renew_deadline(
            lease_duration_seconds, renew_interval_seconds
        )
        if not 0 < renew_interval_seconds < deadline < lease_duration_seconds:
            raise ValueError(
                f"leader election needs renew interval ({renew_interval_seconds} s) < renew deadline "
                f"({deadline} s) < lease duration ({lease_duration_seconds} s)"
            )
        self._kube = kube
        self._name = name
        # The Lease may live apart from the jobs (a gateway with a ``lease_namespace``); named in errors.
        self._namespace = str(getattr(kube, "lease_namespace", "") or kube.namespace)
        self.identity = identity
        self.advertise_url = advertise_url
        self.leader_url: str | None = None  # where the current leader takes relayed jobs (its Lease says)
        self._duration = lease_duration_seconds
        self._renew = renew_interval_seconds
        self._deadline = deadline
        self._on_change = on_change
        self._metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._held = False  # our last write of the Lease succeeded and nobody has written since
        self._renewed_at = 0.0  # our clock, when the last successful write was *sent*
        self._leading = False  # the one published state
        self._changed = asyncio.Event()  # set (and replaced) on every change of ``_leading``
        self._timer: asyncio.TimerHandle | None = None
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._holder: str | None = None
        self._last_error: str | None = None
        self._forbidden: LeaseForbidden | None = None
        self._wakeup = asyncio.Event()

    # --- the signal -------------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """True only while our last renewal was sent less than a renew deadline ago."""
        self._publish()
        return self._leading

    async def wait_change(self) -> bool:
        """Wait for the next change of leadership; returns the new state."""
        await self._changed.wait()
        return self._leading

    async def wait_for(self, leading: bool) -> None:
        """Return once ``is_leader()`` is ``leading`` (at once if it already is)."""
        while self.is_leader() != leading:
            await self.wait_change()

    def status(self) -> LeaderStatus:
        leading = self.is_leader()
        return LeaderStatus(
            identity=self.identity,
            is_leader=leading,
            holder=self._holder,
            leader_url=self.leader_url,
            lease=f"{self._namespace}/{self._name}",
            last_error=self._last_error,
            forbidden=self._forbidden,
        )

    def _publish(self) -> None:
        leading = self._held and self._clock() - self._renewed_at < self._deadline
        if leading == self._leading:
            return
        self._leading = leading
        if not leading and self._timer is not None:
            self._timer.cancel()
        log.info("leader election: %s is %s the leader", self.identity, "now" if leading else "no longer")
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        self._on_change(leading)

    # --- the loop ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                await self.try_acquire_or_renew()
                await wait_set(self._wakeup, self._renew)
                self._wakeup.clear()
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def try_acquire_or_renew(self) -> bool:
        """One election round; True when this replica holds the Lease afterwards. Never raises
        ``KubeError``: a failed round is logged, counted and kept for ``status()``."""
        try:
            held = await self._round()
        except KubeError as exc:
            self._round_failed(exc)
            held = False
        else:
            self._last_error = None
        self._publish()
        return held

    async def release(self) -> None:
        """Give the Lease up at shutdown so a follower takes over at once instead of after expiry."""
        if not self._held:
            return
        self._held = False
        self._publish()
        with contextlib.suppress(KubeError):
            lease = await self._kube.get_lease(self._name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"].update(
                    {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro_time(self._wall())}
                )
                await self._kube.replace_lease(self._name, lease)
                self._holder = None
                log.info("leader election: released the lease")

    # --- one round --------------------------------------------------------------------------------------

    async def _round(self) -> bool:
        lease = await self._call("get", self._kube.get_lease(self._name))
        now = self._clock()
        if lease is None:
            return await self._create()
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime") or ""))
        self._holder = holder or None
        self.leader_url = _leader_url(lease) if holder else None
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if holder != self.identity:
            self._held = False  # whatever we believed, the Lease now says someone else (or nobody)
        duration = float(spec.get("leaseDurationSeconds") or self._duration)
        if holder and holder != self.identity and now - self._observed_at < duration:
            return False
        return await self._update(lease, taking_over=holder != self.identity)

    async def _create(self) -> bool:
        stamp = _micro_time(self._wall())
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._name, "annotations": {LEADER_URL_ANNOTATION: self.advertise_url}},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self._duration),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        sent = self._clock()
        try:
            await self._call("create", self._kube.create_lease(lease))
        except AlreadyExists:
            return False
        self._renewed(sent, acquired=True)
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
        body = {**lease, "metadata": self._metadata(lease), "spec": spec}
        sent = self._clock()
        try:
            await self._call("update", self._kube.replace_lease(self._name, body))
        except Conflict:
            self._held = False  # someone else wrote first; we learn who on the next round
            return False
        self._renewed(sent, acquired=taking_over)
        return True

    def _metadata(self, lease: dict[str, Any]) -> dict[str, Any]:
        metadata = dict(lease.get("metadata") or {})
        annotations = dict(metadata.get("annotations") or {})
        annotations[LEADER_URL_ANNOTATION] = self.advertise_url
        metadata["annotations"] = annotations
        return metadata

    def _renewed(self, sent: float, *, acquired: bool) -> None:
        self._held, self._renewed_at = True, sent
        self._holder = self.identity
        self.leader_url = self.advertise_url or None
        if acquired:
            log.info("leader election: %s acquired the lease", self.identity)
        # Publish the step-down when the deadline passes even if nobody reads is_leader() meanwhile
        # (e.g. while the next renewal hangs on a slow apiserver).
        if self._timer is not None:
            self._timer.cancel()
        remaining = max(0.0, sent + self._deadline - self._clock())
        self._timer = asyncio.get_running_loop().call_later(remaining, self._publish)

    # --- errors -----------------------------------------------------------------------------------------

    async def _call(self, verb: str, call: Awaitable[T]) -> T:
        """Await one Lease request; a 403 is remembered (and logged once) as the RBAC rule ``verb`` needs."""
        try:
            result = await call
        except Forbidden as exc:
            self._forbid(LeaseForbidden(verb, self._namespace, self._name), exc)
            raise
        if self._forbidden is not None and self._forbidden.verb == verb:
            log.info('leader election: "%s" on the Lease is allowed again', verb)
            self._forbid(None, None)
        return result

    def _forbid(self, problem: LeaseForbidden | None, exc: Forbidden | None) -> None:
        if problem == self._forbidden:
            return
        if problem is not None and exc is not None:
            log.error("%s (apiserver: %s)", problem.message(), exc.message[:300])
        if self._metrics is not None:
            if self._forbidden is not None:
                self._metrics.leader_lease_forbidden.labels(self._forbidden.verb).set(0)
            if problem is not None:
                self._metrics.leader_lease_forbidden.labels(problem.verb).set(1)
        self._forbidden = problem

    def _round_failed(self, exc: KubeError) -> None:
        reason = "forbidden" if isinstance(exc, Forbidden) else "unavailable" if exc.is_retryable else "error"
        self._last_error = str(exc)[:500]
        if self._metrics is not None:
            self._metrics.leader_election_errors.labels(reason).inc()
        if reason != "forbidden":  # already logged once as an error naming the rule
            log.warning("leader election: %s", exc)
