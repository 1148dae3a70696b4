"""A controller-shaped object for page tests: a real ``JobBook`` and small stand-ins for the rest.

The pages only read ``controller.jobs``, ``elector.status()``, ``admitter``, ``graphql.budget``,
``sweeper.last``/``sweep()`` and ``settings.server.ops_token``; a tiny FastAPI app with the router and
this object on ``app.state`` serves them without a cluster (each test builds its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from app.buildkite.retry import RateBudget
from app.jobs import JobBook
from app.leader import LeaderStatus
from app.sweep import SweepSummary
from app.web import router


@dataclass
class StubSweeper:
    last: SweepSummary | None = None
    last_at: float | None = None
    triggers: list[str] = field(default_factory=list)

    async def sweep(self, *, trigger: str, wait_seconds: float = 0) -> SweepSummary:
        self.triggers.append(trigger)
        self.last = SweepSummary(seen=3, queued=1, unannounced=1)
        return self.last


@dataclass
class StubAdmitter:
    live: int = 2
    limit: int = 10
    waiting: int = 0

    def in_flight(self) -> int:
        return self.live

    def queued(self) -> int:
        return self.waiting


@dataclass
class StubElector:
    leading: bool = True
    holder: str | None = "replica-a"

    def status(self) -> LeaderStatus:
        return LeaderStatus(
            identity="replica-a",
            is_leader=self.leading,
            holder=self.holder,
            leader_url="http://10.0.0.7:8080" if self.holder else None,
            lease="buildkite/buildkite-controller-leader",
            last_error=None,
            forbidden=None,
        )


def controller(*, ops_token: str | None = None, now: float = 1_700_000_000.0) -> Any:
    clock = SimpleNamespace(now=now)
    book = JobBook(replica="replica-a", wall_clock=lambda: clock.now, clock=lambda: clock.now)
    return SimpleNamespace(
        jobs=book,
        clock=clock,
        elector=StubElector(),
        admitter=StubAdmitter(),
        sweeper=StubSweeper(),
        graphql=SimpleNamespace(budget=RateBudget(remaining=19_000, limit=20_000, reset_at=None)),
        settings=SimpleNamespace(
            server=SimpleNamespace(ops_token=SecretStr(ops_token) if ops_token is not None else None)
        ),
    )


def app_for(stand_in: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router(clock=lambda: stand_in.clock.now))
    app.state.controller = stand_in
    return app
