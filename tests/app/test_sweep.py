"""Sweeper: what it hands to intake, what it reports, its failures, and its cluster scoping — with a
stand-in GraphQL client, and against the fake Buildkite over loopback HTTP with two clusters."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from app.buildkite.graphql import GraphQLClient
from app.buildkite.queries import JobRecord
from app.errors import BuildkiteUnavailable
from app.intake import Intake, Retry
from app.jobs import JobBook
from app.metrics import Metrics
from app.settings import SweepSettings
from app.simulate.buildkite_server import FakeBuildkite
from app.sweep import Sweeper
from app.tags import ControllerTags

pytest_plugins = ["app.simulate.buildkite_fixtures"]

CLUSTER = "7b4f3c2a-1d5e-4f6a-9b8c-0d1e2f3a4b5c"
OTHER_CLUSTER = "5c1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"


def record(
    n: int, *, state: str = "scheduled", queue: str = "kubernetes", cluster: str | None = None
) -> JobRecord:
    return JobRecord(
        uuid=f"00000000-0000-4000-8000-{n:012d}",
        state=state,
        agent_query_rules=(f"queue={queue}",),
        env={},
        command="true",
        priority=0,
        cluster_uuid=cluster,
        has_cluster=cluster is not None,
    )


class FakeGraphQL:
    def __init__(self, pages: dict[str, list[JobRecord]] | Exception) -> None:
        self.pages = pages
        self.calls: list[list[str]] = []
        self.clusters: list[str | None] = []

    async def scheduled_jobs(
        self, *, org: str, agent_query_rules: list[str], cluster_uuid: str | None = None, **_: Any
    ) -> list[JobRecord]:
        self.calls.append(agent_query_rules)
        self.clusters.append(cluster_uuid)
        if isinstance(self.pages, Exception):
            raise self.pages
        return self.pages.get(",".join(agent_query_rules), [])


class Confirmer:
    """Stands in for the confirm stage: the sweep's records need no second confirm."""

    def __init__(self) -> None:
        self.accepted: list[JobRecord] = []

    async def confirm(self, uuids: list[str]) -> Retry | None:
        return None

    async def accept(self, records: list[JobRecord]) -> None:
        self.accepted.extend(records)


class NoRelay:
    async def forward(self, uuids: list[str]) -> Retry | None:
        raise AssertionError("the leader never relays")


def sweeper(
    graphql: Any, *, queues: list[str], cluster_uuid: str | None = None, org: str = "acme"
) -> tuple[Sweeper, Intake, Confirmer]:
    metrics = Metrics()
    book = JobBook(replica="test")
    confirmer = Confirmer()
    intake = Intake(
        book=book,
        confirmer=confirmer,
        relay=NoRelay(),
        is_leader=lambda: True,
        batch_size=100,
        metrics=metrics,
    )
    sweep = Sweeper(
        graphql=graphql,
        org=org,
        tags=ControllerTags.from_settings(queues=queues, tags=[]),
        intake=intake,
        book=book,
        settings=SweepSettings(),
        metrics=metrics,
        cluster_uuid=cluster_uuid,
    )
    return sweep, intake, confirmer


def test_one_query_per_queue_and_only_new_scheduled_jobs_are_handed_over() -> None:
    graphql = FakeGraphQL(
        {
            "queue=build": [record(1, queue="build"), record(99, queue="build")],
            "queue=deploy": [record(2, queue="deploy"), record(3, state="running", queue="deploy")],
        }
    )
    sweep, intake, confirmer = sweeper(graphql, queues=["build", "deploy"])
    intake.submit(record(2).uuid)  # a webhook announced these already
    intake.submit(record(99).uuid)

    summary = asyncio.run(sweep.sweep(trigger="api"))

    assert graphql.calls == [["queue=build"], ["queue=deploy"]]
    assert graphql.clusters == [None, None]  # no cluster configured: today's query
    assert [r.uuid for r in confirmer.accepted] == [record(1).uuid]
    assert (summary.seen, summary.already_known, summary.filtered, summary.queued) == (4, 2, 1, 1)
    assert summary.unannounced == 1 and summary.other_cluster == 0


def test_a_failed_sweep_is_reported_not_raised() -> None:
    sweep, _, confirmer = sweeper(FakeGraphQL(BuildkiteUnavailable("HTTP 502")), queues=["build"])
    summary = asyncio.run(sweep.sweep(trigger="timer"))
    assert summary.error is not None and "502" in summary.error
    assert confirmer.accepted == [] and sweep.last == summary


def test_with_a_cluster_the_query_is_scoped_and_other_clusters_jobs_are_dropped() -> None:
    # Buildkite filters by cluster; a job of another cluster that still gets through is dropped here.
    graphql = FakeGraphQL(
        {"queue=kubernetes": [record(1, cluster=CLUSTER), record(2, cluster=OTHER_CLUSTER), record(3)]}
    )
    sweep, _, confirmer = sweeper(graphql, queues=["kubernetes"], cluster_uuid=CLUSTER)

    summary = asyncio.run(sweep.sweep(trigger="api"))

    assert graphql.clusters == [CLUSTER]
    assert [r.uuid for r in confirmer.accepted] == [record(1).uuid]
    # record 3 came back without its cluster: it cannot be shown to be ours, so it is dropped too.
    assert (summary.seen, summary.filtered, summary.other_cluster, summary.queued) == (3, 2, 2, 1)


def sweep_fake(bk: FakeBuildkite, *, cluster_uuid: str | None) -> list[str]:
    """One sweep of a Sweeper with the real GraphQL client against the fake Buildkite; UUIDs handed over."""

    async def main() -> list[str]:
        async with httpx.AsyncClient() as http:
            graphql = GraphQLClient(http, url=bk.graphql_url, token=bk.api_token)
            sweep, _, confirmer = sweeper(
                graphql, queues=["kubernetes"], cluster_uuid=cluster_uuid, org=bk.org.slug
            )
            summary = await sweep.sweep(trigger="api")
            assert summary.error is None, summary.error
            return sorted(r.uuid for r in confirmer.accepted)

    return asyncio.run(main())


def test_two_clusters_with_the_same_queue_name_each_controller_takes_its_own(
    fake_buildkite: FakeBuildkite,
) -> None:
    ours = fake_buildkite.add_job(agents={"queue": "kubernetes"})
    theirs = fake_buildkite.add_job(agents={"queue": "kubernetes"}, cluster_id=OTHER_CLUSTER)

    assert sweep_fake(fake_buildkite, cluster_uuid=fake_buildkite.org.cluster_uuid) == [ours]
    assert sweep_fake(fake_buildkite, cluster_uuid=OTHER_CLUSTER) == [theirs]
    # Without cluster-uuid both clusters' jobs are taken: the unsafe case the README warns about.
    assert sweep_fake(fake_buildkite, cluster_uuid=None) == sorted([ours, theirs])
