"""Leader election over a real Lease on the fake apiserver, with clocks we move by hand (and one run in
real time with short durations)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kubernetes.aio import client as kclient
from pydantic import ValidationError

from app.kube import KubeAPI, TokenBucket
from app.leader import LeaderElector, LeaseForbidden
from app.metrics import Metrics
from app.settings import LeaderSettings, Settings
from app.simulate.kube_api import FakeKubeAPI
from app.simulate.kube_client import kube_client_config
from tests.app.kube_fixtures import gateway
from tests.support import Clock, eventually

_OPEN: list[KubeAPI] = []


def run(test: Callable[[FakeKubeAPI], Awaitable[None]]) -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        try:
            await test(kube)
        finally:
            while _OPEN:
                await _OPEN.pop().close()

    with FakeKubeAPI() as kube:
        asyncio.run(scenario(kube))


def open_gateway(kube: FakeKubeAPI) -> KubeAPI:
    api = gateway(kube.url)
    _OPEN.append(api)
    return api


def elector(
    kube: FakeKubeAPI, identity: str, clock: Callable[[], float], *, api: Any = None, **kwargs: Any
) -> LeaderElector:
    options: dict[str, Any] = {"lease_duration_seconds": 15, "renew_interval_seconds": 5, **kwargs}
    return LeaderElector(
        kube=api or open_gateway(kube), name="leader", identity=identity, clock=clock, **options
    )


def leaders(*electors: LeaderElector) -> list[str]:
    return [e.identity for e in electors if e.is_leader()]


def test_first_replica_takes_the_lease_and_the_second_follows() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock = Clock()
        a, b = elector(kube, "a", clock), elector(kube, "b", clock)
        assert await a.try_acquire_or_renew() is True
        assert await b.try_acquire_or_renew() is False
        assert leaders(a, b) == ["a"]
        assert b.status().holder == "a" and a.status().holder == "a"

    run(scenario)


def test_follower_takes_over_only_after_the_lease_expires_by_its_own_clock() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock_a, clock_b = Clock(), Clock()
        a, b = elector(kube, "a", clock_a), elector(kube, "b", clock_b)
        await a.try_acquire_or_renew()
        await b.try_acquire_or_renew()  # b observes a's record now
        clock_b.now += 14
        assert await b.try_acquire_or_renew() is False
        clock_b.now += 2  # a has not renewed for 16 s of b's time
        assert await b.try_acquire_or_renew() is True
        clock_a.now += 16
        assert a.is_leader() is False  # a steps down on its own: it could not renew in time
        assert await a.try_acquire_or_renew() is False
        assert a.status().holder == "b"

    run(scenario)


def test_the_leader_stops_at_the_renew_deadline_before_anyone_may_take_over() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock = Clock()
        a, b = elector(kube, "a", clock), elector(kube, "b", clock)
        await a.try_acquire_or_renew()
        await b.try_acquire_or_renew()
        clock.now += 9.9
        assert a.is_leader()
        clock.now += 0.2  # 10.1 s since a's renewal was sent: past the 10 s deadline, inside the 15 s lease
        assert leaders(a, b) == []
        assert await b.try_acquire_or_renew() is False  # b must still wait for the lease duration
        clock.now += 5
        assert await b.try_acquire_or_renew() is True
        assert leaders(a, b) == ["b"]

    run(scenario)


def test_renewals_keep_the_leader() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock = Clock()
        a, b = elector(kube, "a", clock), elector(kube, "b", clock)
        await a.try_acquire_or_renew()
        for _ in range(5):
            clock.now += 5
            assert await a.try_acquire_or_renew() is True
            assert await b.try_acquire_or_renew() is False
        assert a.is_leader()

    run(scenario)


def test_release_hands_over_at_once() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock = Clock()
        a, b = elector(kube, "a", clock), elector(kube, "b", clock)
        await a.try_acquire_or_renew()
        await a.release()
        assert not a.is_leader()
        assert await b.try_acquire_or_renew() is True

    run(scenario)


def test_concurrent_candidates_elect_exactly_one() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock = Clock()
        candidates = [elector(kube, f"r{i}", clock) for i in range(5)]
        results = await asyncio.gather(*(c.try_acquire_or_renew() for c in candidates))
        assert sum(results) == 1
        assert len(leaders(*candidates)) == 1

    run(scenario)


def test_leadership_changes_are_reported() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock = Clock()
        changes: list[bool] = []
        a = elector(kube, "a", clock, on_change=changes.append)
        await a.try_acquire_or_renew()
        await a.release()
        assert changes == [True, False]

    run(scenario)


# --- a slow apiserver: the deadline counts from when the renewal was sent ----------------------------


class HeldReplies:
    """A gateway whose Lease updates reach the apiserver at once but whose replies wait for ``release``."""

    def __init__(self, inner: KubeAPI) -> None:
        self._inner = inner
        self.namespace = inner.namespace
        self.hold = False
        self.committed = asyncio.Event()
        self.release = asyncio.Event()
        self.replies = 0

    async def get_lease(self, name: str) -> Any:
        return await self._inner.get_lease(name)

    async def create_lease(self, lease: Any) -> Any:
        return await self._inner.create_lease(lease)

    async def replace_lease(self, name: str, lease: Any) -> Any:
        written = await self._inner.replace_lease(name, lease)
        if self.hold:
            self.committed.set()
            await self.release.wait()
        self.replies += 1
        return written


def test_a_renewal_answered_late_never_makes_two_leaders() -> None:
    """The write lands at once, its reply comes after the follower took over: measured from the reply
    (as before), the old leader would have led again beside the new one."""

    async def scenario(kube: FakeKubeAPI) -> None:
        clock = Clock()
        slow = HeldReplies(open_gateway(kube))
        a = elector(kube, "a", clock, api=slow)
        b = elector(kube, "b", clock)
        await a.try_acquire_or_renew()
        await b.try_acquire_or_renew()
        clock.now += 2
        slow.hold = True
        renewal = asyncio.create_task(a.try_acquire_or_renew())  # sent at 1002, written, reply held
        await slow.committed.wait()
        clock.now += 0.1
        assert await b.try_acquire_or_renew() is False  # b sees the new record, observed at 1002.1
        assert leaders(a, b) == ["a"]
        clock.now += 8.5  # 10.5 s after a's last answered renewal was sent (1000)
        assert leaders(a, b) == []
        clock.now += 6.6  # b: 15.1 s without a change
        assert await b.try_acquire_or_renew() is True
        assert leaders(a, b) == ["b"]
        slow.release.set()
        assert await renewal is True  # the write did succeed ...
        assert leaders(a, b) == ["b"]  # ... but was sent 15.2 s ago: a does not lead
        assert await a.try_acquire_or_renew() is False
        assert leaders(a, b) == ["b"]

    run(scenario)


class SlowReplies:
    """In real time: once ``slow`` names an identity, its Lease updates are written but answered late."""

    def __init__(self, inner: KubeAPI, identity: str, switch: dict[str, Any]) -> None:
        self._inner = inner
        self._identity = identity
        self._switch = switch
        self.namespace = inner.namespace

    async def get_lease(self, name: str) -> Any:
        return await self._inner.get_lease(name)

    async def create_lease(self, lease: Any) -> Any:
        return await self._inner.create_lease(lease)

    async def replace_lease(self, name: str, lease: Any) -> Any:
        written = await self._inner.replace_lease(name, lease)
        if self._switch.get("slow") == self._identity:
            self._switch["held"] = self._switch.get("held", 0) + 1
            await asyncio.sleep(self._switch["delay"])
            self._switch["late"] = self._switch.get("late", 0) + 1
        return written


def test_three_replicas_in_real_time_never_lead_at_once_while_the_leader_is_answered_late() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        switch: dict[str, Any] = {"delay": 1.6}
        changes: list[tuple[float, str, bool]] = []
        electors = [
            LeaderElector(
                kube=SlowReplies(open_gateway(kube), name, switch),  # type: ignore[arg-type]
                name="leader",
                identity=name,
                lease_duration_seconds=1.0,
                renew_deadline_seconds=0.5,
                renew_interval_seconds=0.1,
                on_change=lambda leading, name=name: changes.append((time.monotonic(), name, leading)),
            )
            for name in ("a", "b", "c")
        ]
        samples: list[list[str]] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                samples.append(leaders(*electors))
                await asyncio.sleep(0.002)

        tasks = [asyncio.create_task(e.run()) for e in electors]
        sampler = asyncio.create_task(sample())
        try:
            await eventually(lambda: len(leaders(*electors)) == 1, timeout=5, what="a first leader")
            [first] = leaders(*electors)
            switch["slow"] = first
            await eventually(lambda: switch.get("late", 0) >= 1, timeout=10, what="the late reply")
            await eventually(
                lambda: leaders(*electors) not in ([], [first]), timeout=5, what="a second leader"
            )
        finally:
            stop.set()
            for task in [*tasks, sampler]:
                task.cancel()
            await asyncio.gather(*tasks, sampler, return_exceptions=True)
        assert max(len(s) for s in samples) == 1, [s for s in samples if len(s) > 1][:3]
        assert len(samples) > 100
        # The step-downs and take-overs, as the listeners heard them, never overlap either.
        holding: dict[str, float] = {}
        for _, name, leading in sorted(changes):
            if leading:
                assert not holding, f"{name} took over while {list(holding)} still led"
                holding[name] = 1
            else:
                holding.pop(name, None)
        assert [(name, leading) for _, name, leading in changes if name == first][:2] == [
            (first, True),
            (first, False),
        ]

    run(scenario)


# --- one signal -------------------------------------------------------------------------------------


def test_a_passed_deadline_is_published_without_anyone_asking() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        changes: list[bool] = []
        a = LeaderElector(
            kube=open_gateway(kube),
            name="leader",
            identity="a",
            lease_duration_seconds=0.6,
            renew_deadline_seconds=0.3,
            renew_interval_seconds=0.1,
            on_change=changes.append,
        )
        await a.try_acquire_or_renew()  # and no renewal after it
        assert changes == [True]
        assert await asyncio.wait_for(a.wait_change(), timeout=5) is False
        assert changes == [True, False]

    run(scenario)


def test_wait_for_returns_when_leadership_matches() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock = Clock()
        a = elector(kube, "a", clock)
        await a.wait_for(False)  # already true: returns at once
        waiter = asyncio.create_task(a.wait_for(True))
        await asyncio.sleep(0)
        assert not waiter.done()
        await a.try_acquire_or_renew()
        await asyncio.wait_for(waiter, timeout=5)
        await a.release()
        await asyncio.wait_for(a.wait_for(False), timeout=5)

    run(scenario)


def test_is_leader_after_the_deadline_is_false_and_tells_the_listeners_once() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock = Clock()
        changes: list[bool] = []
        a = elector(kube, "a", clock, on_change=changes.append)
        await a.try_acquire_or_renew()
        clock.now += 11
        assert [a.is_leader(), a.is_leader(), a.status().is_leader] == [False, False, False]
        assert changes == [True, False]

    run(scenario)


# --- a Lease RBAC does not allow ---------------------------------------------------------------------


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(f"buildkite_controller_{name}", labels)


@pytest.mark.parametrize(
    ("verb", "setup"),
    [("get", "none"), ("create", "none"), ("update", "held by a")],
)
def test_a_forbidden_lease_names_the_missing_rule_in_status_log_and_metrics(
    verb: str, setup: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock, metrics = Clock(), Metrics()
        if setup == "held by a":
            await elector(kube, "a", clock).try_acquire_or_renew()
            clock.now += 20  # a is gone; b will try to take over
        b = elector(kube, "b", clock, metrics=metrics)
        if setup == "held by a":
            await b.try_acquire_or_renew()  # observe a's record first
            clock.now += 16
        kube.inject(verb, "leases", status=403, count=100)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="app.leader"):
            assert await b.try_acquire_or_renew() is False
            assert await b.try_acquire_or_renew() is False
        status = b.status()
        assert status.forbidden == LeaseForbidden(verb, "buildkite", "leader")
        assert status.is_leader is False and status.lease == "buildkite/leader"
        assert status.last_error is not None and "403" in status.last_error
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors  # once, not every round
        for word in (f'"{verb}"', "leases", "coordination.k8s.io", '"buildkite"', '"leader"'):
            assert word in errors[0]
        assert ("resourceNames" in errors[0]) is (verb != "create")  # RBAC cannot name what to create
        assert gauge(metrics, "leader_lease_forbidden", verb=verb) == 1
        assert gauge(metrics, "leader_election_errors_total", reason="forbidden") == 2

        kube.clear_faults()
        assert await b.try_acquire_or_renew() is True
        status = b.status()
        assert status.forbidden is None and status.last_error is None and status.is_leader
        assert gauge(metrics, "leader_lease_forbidden", verb=verb) == 0

    run(scenario)


def test_a_forbidden_lease_in_its_own_namespace_names_that_namespace() -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        api = KubeAPI(
            kclient.ApiClient(kube_client_config(kube.url)),
            namespace="jobs",
            limiter=TokenBucket(1000, 1000),
            lease_namespace="controller",
        )
        _OPEN.append(api)
        kube.inject("get", "leases", status=403, count=10)
        b = elector(kube, "b", Clock(), api=api)
        assert await b.try_acquire_or_renew() is False
        assert b.status().forbidden == LeaseForbidden("get", "controller", "leader")
        assert b.status().lease == "controller/leader"

    run(scenario)


def test_an_unreachable_apiserver_is_a_warning_and_the_leader_keeps_its_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(kube: FakeKubeAPI) -> None:
        clock, metrics = Clock(), Metrics()
        a = elector(kube, "a", clock, metrics=metrics)
        await a.try_acquire_or_renew()
        kube.inject("update", "leases", status=503, count=100)
        clock.now += 5
        assert await a.try_acquire_or_renew() is False
        assert a.is_leader()  # 5 s since the last renewal was sent: still inside the deadline
        assert a.status().forbidden is None and "503" in (a.status().last_error or "")
        clock.now += 5
        assert not a.is_leader()
        assert gauge(metrics, "leader_election_errors_total", reason="unavailable") == 1

    run(scenario)


# --- settings -------------------------------------------------------------------------------------------


def test_default_timings_are_client_gos() -> None:
    leader = Settings().leader
    timings = (leader.lease_duration_seconds, leader.renew_deadline, leader.renew_interval_seconds)
    assert timings == (15, 10, 2)


def test_a_short_lease_alone_keeps_a_valid_deadline() -> None:
    leader = Settings(leader=LeaderSettings(lease_duration_seconds=3, renew_interval_seconds=1)).leader
    assert 1 < leader.renew_deadline < 3


@pytest.mark.parametrize(
    ("interval", "deadline", "duration"), [(2, 2, 15), (2, 15, 15), (2, 20, 15), (5, 4, 15)]
)
def test_renew_deadline_must_lie_between_interval_and_duration(
    interval: float, deadline: float, duration: float
) -> None:
    leader = {
        "renew_interval_seconds": interval,
        "renew_deadline_seconds": deadline,
        "lease_duration_seconds": duration,
    }
    with pytest.raises(ValidationError, match="renew"):
        Settings.model_validate({"leader": leader})
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderElector(
            kube=None,  # type: ignore[arg-type]
            name="x",
            identity="x",
            lease_duration_seconds=duration,
            renew_interval_seconds=interval,
            renew_deadline_seconds=deadline,
        )
