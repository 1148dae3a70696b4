"""Sweeper: what it hands to intake, what it reports, and its failures, with a stand-in GraphQL client."""

from __future__ import annotations

import asyncio
from typing import Any

from app.buildkite.queries import JobRecord
from app.errors import BuildkiteUnavailable
from app.intake import Intake
from app.metrics import Metrics
from app.settings import SweepSettings
from app.sweep import Sweeper
from app.tags import ControllerTags


def record(n: int, *, state: str = "scheduled", queue: str = "kubernetes") -> JobRecord:
    return JobRecord(
        uuid=f"00000000-0000-4000-8000-{n:012d}",
        state=state,
        agent_query_rules=(f"queue={queue}",),
        env={},
        command="true",
        priority=0,
    )


class FakeGraphQL:
    def __init__(self, pages: dict[str, list[JobRecord]] | Exception) -> None:
        self.pages = pages
        self.calls: list[list[str]] = []
        self.budget = None

    async def scheduled_jobs(self, *, org: str, agent_query_rules: list[str], **_: Any) -> list[JobRecord]:
        self.calls.append(agent_query_rules)
        if isinstance(self.pages, Exception):
            raise self.pages
        return self.pages.get(",".join(agent_query_rules), [])


def sweeper(graphql: FakeGraphQL, accepted: list[JobRecord], *, queues: list[str]) -> tuple[Sweeper, Intake]:
    async def accept(records: list[JobRecord]) -> None:
        accepted.extend(records)

    async def confirm(batch: list[str]) -> None:
        raise AssertionError("the sweep's records need no second confirm")

    metrics = Metrics()
    intake = Intake(
        batch_size=100,
        window_seconds=0,
        confirm=confirm,
        accept=accept,
        has_pod=lambda uuid: uuid.endswith("99"),
        metrics=metrics,
    )
    tags = ControllerTags.from_settings(queues=queues, tags=[])
    return Sweeper(
        graphql=graphql, org="acme", tags=tags, intake=intake, settings=SweepSettings(), metrics=metrics
    ), intake  # type: ignore[arg-type]


def test_one_query_per_queue_and_only_new_scheduled_jobs_are_handed_over() -> None:
    graphql = FakeGraphQL(
        {
            "queue=build": [record(1, queue="build"), record(99, queue="build")],
            "queue=deploy": [record(2, queue="deploy"), record(3, state="running", queue="deploy")],
        }
    )
    accepted: list[JobRecord] = []
    sweep, intake = sweeper(graphql, accepted, queues=["build", "deploy"])
    intake.submit(record(2).uuid)  # a webhook announced this one already

    summary = asyncio.run(sweep.sweep(trigger="api"))

    assert graphql.calls == [["queue=build"], ["queue=deploy"]]
    assert [r.uuid for r in accepted] == [record(1).uuid]
    assert (summary.seen, summary.already_known, summary.filtered, summary.queued) == (4, 2, 1, 1)
    assert summary.unannounced == 1


def test_a_failed_sweep_is_reported_not_raised() -> None:
    accepted: list[JobRecord] = []
    sweep, _ = sweeper(FakeGraphQL(BuildkiteUnavailable("HTTP 502")), accepted, queues=["build"])
    summary = asyncio.run(sweep.sweep(trigger="timer"))
    assert summary.error is not None and "502" in summary.error
    assert accepted == [] and sweep.last == summary
