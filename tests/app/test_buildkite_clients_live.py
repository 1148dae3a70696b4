"""The GraphQL and agent API clients against the fake Buildkite over real HTTP on loopback.

The fake executes our GraphQL documents with graphql-core on Buildkite's schema and runs the agent
API's job state machine, so these tests catch what MockTransport tests cannot: a query the schema
refuses, a cursor we pass wrongly, a request body the agent API would reject.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from app.buildkite.agent_api import AgentAPI, FailOutcome
from app.buildkite.graphql import GraphQLClient
from app.buildkite.retry import RetryPolicy
from app.errors import BuildkiteAuthError, BuildkiteError, RateLimited
from app.simulate.buildkite_server import FakeBuildkite

pytest_plugins = ["app.simulate.buildkite_fixtures"]

T = TypeVar("T")
POLICY = RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.05)
UNKNOWN = "00000000-0000-4000-8000-00000000dead"


class Clients:
    def __init__(self, http: httpx.AsyncClient, fake: FakeBuildkite, sleeps: list[float], token: str) -> None:
        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)

        self.graphql = GraphQLClient(http, url=fake.graphql_url, token=token, retry=POLICY, sleep=sleep)
        self.agent = AgentAPI(
            http, endpoint=fake.agent_endpoint, agent_token=fake.agent_token, retry=POLICY, sleep=sleep
        )


def run(
    fake: FakeBuildkite,
    action: Callable[[Clients], Awaitable[T]],
    *,
    sleeps: list[float] | None = None,
    token: str | None = None,
) -> T:
    async def main() -> T:
        async with httpx.AsyncClient(timeout=5.0) as http:
            return await action(
                Clients(http, fake, sleeps if sleeps is not None else [], token or fake.api_token)
            )

    return asyncio.run(main())


def test_confirm_jobs_reads_a_batch_in_one_aliased_request(fake_buildkite: FakeBuildkite) -> None:
    plugins: list[dict[str, Any] | str] = [{"kubernetes": {"podSpec": {"containers": [{"image": "alpine"}]}}}]
    scheduled = fake_buildkite.add_job(command="make test", plugins=plugins, priority=4)
    running = fake_buildkite.add_job(agents={"queue": "other"})
    fake_buildkite.set_state(running, "running")
    before = len(fake_buildkite.calls_to("/v1"))

    records = run(fake_buildkite, lambda c: c.graphql.confirm_jobs([scheduled, running, UNKNOWN]))

    assert len(fake_buildkite.calls_to("/v1")) == before + 1
    assert records[UNKNOWN] is None
    job = records[scheduled]
    assert job is not None
    assert (job.state, job.command, job.priority) == ("scheduled", "make test", 4)
    assert job.agent_query_rules == ("queue=kubernetes",)
    assert "kubernetes" in job.env["BUILDKITE_PLUGINS"]
    assert job.env["BUILDKITE_JOB_ID"] == scheduled
    other = records[running]
    assert other is not None and other.state == "running"
    assert other.agent_query_rules == ("queue=other",)


def test_confirm_jobs_handles_a_full_batch_of_100(fake_buildkite: FakeBuildkite) -> None:
    uuids = [fake_buildkite.add_job() for _ in range(100)]
    records = run(fake_buildkite, lambda c: c.graphql.confirm_jobs(uuids))
    assert [record.uuid if record else None for record in records.values()] == uuids


def test_scheduled_jobs_pages_through_the_queue_oldest_first(fake_buildkite: FakeBuildkite) -> None:
    ours = [fake_buildkite.add_job(agents={"queue": "k8s"}) for _ in range(7)]
    fake_buildkite.add_job(agents={"queue": "elsewhere"})
    taken = fake_buildkite.add_job(agents={"queue": "k8s"})
    fake_buildkite.set_state(taken, "running")
    before = len(fake_buildkite.calls_to("/v1"))

    jobs = run(
        fake_buildkite,
        lambda c: c.graphql.scheduled_jobs(
            org=fake_buildkite.org.slug, agent_query_rules=["queue=k8s"], page_size=3
        ),
    )

    assert [job.uuid for job in jobs] == ours
    assert all(job.state == "scheduled" and job.env["BUILDKITE_JOB_ID"] == job.uuid for job in jobs)
    assert len(fake_buildkite.calls_to("/v1")) - before == 3


def test_scheduled_jobs_for_an_unknown_org_is_a_clear_error(fake_buildkite: FakeBuildkite) -> None:
    with pytest.raises(BuildkiteError, match="organization"):
        run(fake_buildkite, lambda c: c.graphql.scheduled_jobs(org="no-such-org", agent_query_rules=[]))


def test_job_states_reports_cancellations(fake_buildkite: FakeBuildkite) -> None:
    keep, cancel = fake_buildkite.add_job(), fake_buildkite.add_job()
    fake_buildkite.cancel(cancel)
    states = run(fake_buildkite, lambda c: c.graphql.job_states([keep, cancel, UNKNOWN]))
    assert states == {keep: "scheduled", cancel: "canceled"}


def test_a_graphql_429_is_waited_out_and_retried(fake_buildkite: FakeBuildkite) -> None:
    job = fake_buildkite.add_job()
    fake_buildkite.inject("graphql", status=429, retry_after=2)
    sleeps: list[float] = []
    records = run(fake_buildkite, lambda c: c.graphql.confirm_jobs([job]), sleeps=sleeps)
    assert records[job] is not None
    assert sleeps == [2.0]  # the injected sleep records the wait instead of taking it


def test_a_wrong_api_token_is_an_auth_error(fake_buildkite: FakeBuildkite) -> None:
    with pytest.raises(BuildkiteAuthError):
        run(fake_buildkite, lambda c: c.graphql.confirm_jobs([UNKNOWN]), token="bkua_wrong")


def test_fail_job_finishes_the_job_with_minus_one_and_the_message_in_its_log(
    fake_buildkite: FakeBuildkite,
) -> None:
    job = fake_buildkite.add_job()
    message = "The image `registry.invalid/nope:1` could not be pulled: ErrImagePull."

    outcome = run(fake_buildkite, lambda c: c.agent.fail_job(job, message))

    assert outcome is FailOutcome.FAILED
    finished = fake_buildkite.job(job)
    assert finished.state == "finished"
    assert finished.exit_status == "-1"
    assert finished.signal_reason == "stack_error"
    assert message.encode() in fake_buildkite.log(job)
    assert fake_buildkite.finish_calls(job) == 1
    assert fake_buildkite.calls_to("/v3/disconnect", method="POST")


def test_fail_job_leaves_a_job_another_agent_holds(fake_buildkite: FakeBuildkite) -> None:
    job = fake_buildkite.add_job()
    fake_buildkite.set_state(job, "running")
    assert run(fake_buildkite, lambda c: c.agent.fail_job(job, "too late")) is FailOutcome.HELD_BY_ANOTHER
    assert fake_buildkite.job(job).state == "running"
    assert fake_buildkite.finish_calls(job) == 0


def test_failing_a_job_twice_finishes_it_once(fake_buildkite: FakeBuildkite) -> None:
    job = fake_buildkite.add_job()

    async def twice(clients: Clients) -> list[FailOutcome]:
        return [await clients.agent.fail_job(job, "first"), await clients.agent.fail_job(job, "second")]

    assert run(fake_buildkite, twice) == [FailOutcome.FAILED, FailOutcome.ENDED]
    assert fake_buildkite.finish_calls(job) == 1
    assert b"second" not in fake_buildkite.log(job)


def test_a_report_whose_finish_failed_is_finished_by_the_same_agent(fake_buildkite: FakeBuildkite) -> None:
    # The fake lets only the agent that acquired a job finish it, as Buildkite does.
    job = fake_buildkite.add_job()
    fake_buildkite.inject("agent", status=503, path="/finish", count=POLICY.attempts)

    async def retried(clients: Clients) -> FailOutcome:
        with pytest.raises(BuildkiteError, match="503"):
            await clients.agent.fail_job(job, "first")
        assert fake_buildkite.job(job).state == "running"
        return await clients.agent.fail_job(job, "second")

    assert run(fake_buildkite, retried) is FailOutcome.FAILED
    finished = fake_buildkite.job(job)
    assert (finished.state, finished.exit_status) == ("finished", "-1")
    assert len(fake_buildkite.calls_to("/v3/register", method="POST")) == 1
    assert b"first" in fake_buildkite.log(job)


def test_a_job_waiting_on_dependencies_is_retried_then_reported(fake_buildkite: FakeBuildkite) -> None:
    job = fake_buildkite.add_job(state="waiting")
    sleeps: list[float] = []
    with pytest.raises(BuildkiteError, match="423"):
        run(fake_buildkite, lambda c: c.agent.fail_job(job, "x"), sleeps=sleeps)
    assert len(sleeps) == POLICY.attempts - 1
    assert fake_buildkite.job(job).state == "waiting"


def test_fail_job_rides_out_an_agent_api_503(fake_buildkite: FakeBuildkite) -> None:
    job = fake_buildkite.add_job()
    fake_buildkite.inject("agent", status=503, path="/start")
    assert run(fake_buildkite, lambda c: c.agent.fail_job(job, "x")) is FailOutcome.FAILED
    assert fake_buildkite.job(job).state == "finished"


def test_the_rate_budget_shrinks_as_queries_spend_points(fake_buildkite: FakeBuildkite) -> None:
    jobs = [fake_buildkite.add_job() for _ in range(5)]

    async def two_batches(clients: Clients) -> list[Any]:
        await clients.graphql.confirm_jobs(jobs)
        first = clients.graphql.budget
        await clients.graphql.confirm_jobs(jobs)
        return [first, clients.graphql.budget]

    first, second = run(fake_buildkite, two_batches)
    assert first.limit == 20_000
    assert second.remaining < first.remaining < 20_000


def test_a_spent_organization_budget_surfaces_as_rate_limited_without_waiting_minutes(
    fake_buildkite: FakeBuildkite,
) -> None:
    job = fake_buildkite.add_job()
    fake_buildkite.set_points(limit=10, used=10)
    sleeps: list[float] = []
    with pytest.raises(RateLimited) as caught:
        run(fake_buildkite, lambda c: c.graphql.confirm_jobs([job]), sleeps=sleeps)
    # The budget window resets in minutes: longer than max_wait, so the caller decides, not a sleep.
    assert caught.value.retry_after > POLICY.max_wait_seconds
    assert sleeps == []


def test_a_graphql_timeout_error_with_200_is_retried(fake_buildkite: FakeBuildkite) -> None:
    job = fake_buildkite.add_job()
    fake_buildkite.inject("graphql", errors=[{"message": "Execution timed out"}])
    records = run(fake_buildkite, lambda c: c.graphql.confirm_jobs([job]))
    assert records[job] is not None
