"""Leader election over a real Lease on the fake apiserver, with clocks we move by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from app.kube import KubeAPI
from app.leader import LeaderElector
from app.simulate.kube_api import FakeKubeAPI
from tests.app.kube_fixtures import gateway


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_OPEN: list[KubeAPI] = []


def run(test: Callable[[str], Awaitable[None]]) -> None:
    async def scenario(url: str) -> None:
        try:
            await test(url)
        finally:
            while _OPEN:
                await _OPEN.pop().close()

    with FakeKubeAPI() as kube:
        asyncio.run(scenario(kube.url))


def elector(url: str, identity: str, clock: Clock, **kwargs: object) -> LeaderElector:
    kube = gateway(url)
    _OPEN.append(kube)
    return LeaderElector(
        kube=kube,
        name="leader",
        identity=identity,
        lease_duration_seconds=15,
        renew_interval_seconds=5,
        clock=clock,
        **kwargs,
    )  # type: ignore[arg-type]


def test_first_replica_takes_the_lease_and_the_second_follows() -> None:
    async def scenario(url: str) -> None:
        clock = Clock()
        a, b = elector(url, "a", clock), elector(url, "b", clock)
        assert await a.try_acquire_or_renew() is True
        assert await b.try_acquire_or_renew() is False
        assert a.is_leader() and not b.is_leader()

    run(scenario)


def test_follower_takes_over_only_after_the_lease_expires_by_its_own_clock() -> None:
    async def scenario(url: str) -> None:
        clock_a, clock_b = Clock(), Clock()
        a, b = elector(url, "a", clock_a), elector(url, "b", clock_b)
        await a.try_acquire_or_renew()
        await b.try_acquire_or_renew()  # b observes a's record now
        clock_b.now += 14
        assert await b.try_acquire_or_renew() is False
        clock_b.now += 2  # a has not renewed for 16 s of b's time
        assert await b.try_acquire_or_renew() is True
        clock_a.now += 16
        assert a.is_leader() is False  # a steps down on its own: it could not renew for a lease duration
        assert await a.try_acquire_or_renew() is False

    run(scenario)


def test_renewals_keep_the_leader() -> None:
    async def scenario(url: str) -> None:
        clock = Clock()
        a, b = elector(url, "a", clock), elector(url, "b", clock)
        await a.try_acquire_or_renew()
        for _ in range(5):
            clock.now += 5
            assert await a.try_acquire_or_renew() is True
            assert await b.try_acquire_or_renew() is False
        assert a.is_leader()

    run(scenario)


def test_release_hands_over_at_once() -> None:
    async def scenario(url: str) -> None:
        clock = Clock()
        a, b = elector(url, "a", clock), elector(url, "b", clock)
        await a.try_acquire_or_renew()
        await a.release()
        assert not a.is_leader()
        assert await b.try_acquire_or_renew() is True

    run(scenario)


def test_concurrent_candidates_elect_exactly_one() -> None:
    async def scenario(url: str) -> None:
        clock = Clock()
        candidates = [elector(url, f"r{i}", clock) for i in range(5)]
        results = await asyncio.gather(*(c.try_acquire_or_renew() for c in candidates))
        assert sum(results) == 1
        assert sum(c.is_leader() for c in candidates) == 1

    run(scenario)


def test_leadership_changes_are_reported() -> None:
    async def scenario(url: str) -> None:
        clock = Clock()
        changes: list[bool] = []
        a = elector(url, "a", clock, on_change=changes.append)
        await a.try_acquire_or_renew()
        await a.release()
        assert changes == [True, False]

    run(scenario)
