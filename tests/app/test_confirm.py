"""``Confirmer``: one GraphQL request per batch; only scheduled jobs with our tags go on to admission.

``FakeConfirmGraphQL`` has the two members of ``GraphQLClient`` the stage uses (``confirm_jobs`` and
``budget``); the intake is the real one, so drops and requeues are seen in its bookkeeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest

import app.confirm
from app.buildkite.queries import JobRecord
from app.confirm import Confirmer, to_job
from app.errors import BuildkiteError, BuildkiteUnavailable, GraphQLErrors, RateLimited
from app.intake import Intake
from app.metrics import Metrics
from app.tags import ControllerTags
from podspec import Job


@dataclass
class Budget:
    remaining: int | None


class FakeConfirmGraphQL:
    """``confirm_jobs`` over a dict of records; records each request; may fail once with ``error``."""

    def __init__(self, records: Sequence[JobRecord] = ()) -> None:
        self.records = {r.uuid: r for r in records}
        self.requests: list[list[str]] = []
        self.error: BuildkiteError | None = None
        self.budget: Budget | None = None

    async def confirm_jobs(self, uuids: Sequence[str]) -> dict[str, JobRecord | None]:
        self.requests.append(list(uuids))
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return {u: self.records.get(u) for u in uuids}


def record(
    uuid: str, *, state: str = "scheduled", rules: tuple[str, ...] = ("queue=kubernetes",), priority: int = 0
) -> JobRecord:
    return JobRecord(uuid, state, rules, {"BUILDKITE_PLUGINS": "[]"}, f"echo {uuid}", priority)


class Stage:
    """A confirmer wired to a real intake, a fake GraphQL and an admit recorder."""

    def __init__(self, records: Sequence[JobRecord] = ()) -> None:
        self.metrics = Metrics()
        self.graphql = FakeConfirmGraphQL(records)
        self.admitted: list[Job] = []
        self.resent: list[list[str]] = []
        self.intake = Intake(
            batch_size=100,
            window_seconds=0,
            confirm=self._resend,
            accept=self._ignore,
            has_pod=lambda uuid: False,
            metrics=self.metrics,
        )
        self.confirmer = Confirmer(
            graphql=self.graphql,  # type: ignore[arg-type]
            tags=ControllerTags.from_settings(queues=["kubernetes"], tags=["os=linux"]),
            intake=self.intake,
            admit=self._admit,
            metrics=self.metrics,
        )

    async def _admit(self, jobs: list[Job]) -> None:
        self.admitted.extend(jobs)

    async def _resend(self, batch: list[str]) -> None:
        self.resent.append(batch)

    async def _ignore(self, records: list[JobRecord]) -> None:
        raise AssertionError("the confirm stage never hands records back to the intake")

    def outcomes(self) -> dict[str, float]:
        samples = self.metrics.registry.get_sample_value
        labels = ("scheduled", "unknown", "state_running", "state_canceled", "not_our_tags", "cancelled")
        name = "buildkite_controller_jobs_confirmed_total"
        return {label: value for label in labels if (value := samples(name, {"outcome": label}))}

    def stage_of(self, uuid: str) -> str:
        return self.intake.entries[uuid].stage


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


def test_a_scheduled_job_with_our_tags_is_admitted_as_a_job() -> None:
    async def scenario() -> None:
        stage = Stage([record("a", priority=7, rules=("queue=kubernetes", "os=linux"))])
        await stage.confirmer.confirm(["a"])
        [job] = stage.admitted
        assert job == Job(
            uuid="a",
            command="echo a",
            env={"BUILDKITE_PLUGINS": "[]"},
            agent_tags={"queue": "kubernetes", "os": "linux"},
            priority=7,
        )
        assert [job.uuid for job in stage.admitted] == ["a"]
        assert stage.outcomes() == {"scheduled": 1}

    run(scenario)


def test_one_graphql_request_per_batch() -> None:
    async def scenario() -> None:
        uuids = [f"job-{i}" for i in range(100)]
        stage = Stage([record(u) for u in uuids])
        await stage.confirmer.confirm(uuids)
        assert stage.graphql.requests == [uuids]
        assert [j.uuid for j in stage.admitted] == uuids

    run(scenario)


@pytest.mark.parametrize(
    ("found", "outcome"),
    [
        pytest.param(None, "unknown", id="unknown-to-buildkite"),
        pytest.param(record("x", state="running"), "state_running", id="already-running"),
        pytest.param(record("x", state="canceled"), "state_canceled", id="cancelled-in-buildkite"),
        pytest.param(record("x", rules=("queue=elsewhere",)), "not_our_tags", id="other-queue"),
        pytest.param(record("x", rules=("queue=kubernetes", "os=windows")), "not_our_tags", id="tag-value"),
        pytest.param(record("x", rules=()), "not_our_tags", id="default-queue"),
    ],
)
def test_jobs_that_are_not_ours_to_run_are_dropped(found: JobRecord | None, outcome: str) -> None:
    async def scenario() -> None:
        stage = Stage([found] if found else [])
        stage.intake.submit("x")
        await stage.confirmer.confirm(["x"])
        assert stage.admitted == []
        assert stage.stage_of("x") == "dropped"
        assert stage.outcomes() == {outcome: 1}

    run(scenario)


def test_a_job_cancelled_by_webhook_is_dropped_even_if_buildkite_still_says_scheduled() -> None:
    async def scenario() -> None:
        stage = Stage([record("x"), record("y")])
        stage.intake.submit("x")
        stage.intake.cancel("x")
        await stage.confirmer.confirm(["x", "y"])
        assert [j.uuid for j in stage.admitted] == ["y"]
        assert stage.outcomes() == {"cancelled": 1, "scheduled": 1}

    run(scenario)


def test_a_mixed_batch_admits_only_the_good_ones_in_order() -> None:
    async def scenario() -> None:
        stage = Stage([record("a"), record("b", state="finished"), record("d", priority=3)])
        await stage.confirmer.confirm(["a", "b", "c", "d"])
        assert [j.uuid for j in stage.admitted] == ["a", "d"]

    run(scenario)


def test_admit_is_not_called_when_nothing_survives() -> None:
    async def scenario() -> None:
        stage = Stage()

        async def never(jobs: list[Job]) -> None:
            raise AssertionError("admit called with nothing to admit")

        stage.confirmer._admit = never  # a tripwire instead of the recorder
        await stage.confirmer.confirm(["unknown-1", "unknown-2"])

    run(scenario)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RateLimited(3), id="rate-limited"),
        pytest.param(BuildkiteUnavailable("502 from graphql"), id="unavailable"),
        pytest.param(GraphQLErrors(["Internal server error"], transient=True), id="graphql-errors"),
    ],
)
def test_a_buildkite_failure_requeues_the_batch(
    monkeypatch: pytest.MonkeyPatch, error: BuildkiteError
) -> None:
    # The real delay is 5 s; the behaviour under test is "requeue after a delay", not its length.
    monkeypatch.setattr(app.confirm, "REQUEUE_DELAY_SECONDS", 0.01)

    async def scenario() -> None:
        stage = Stage([record("a"), record("b")])
        for uuid in ("a", "b"):
            stage.intake.mark(uuid, "confirming")  # as the batching loop leaves them
        stage.graphql.error = error
        await stage.confirmer.confirm(["a", "b"])
        assert stage.admitted == []
        assert stage.stage_of("a") == stage.stage_of("b") == "pending"
        errors = stage.metrics.registry.get_sample_value(
            "buildkite_controller_graphql_errors_total", {"operation": "confirm"}
        )
        assert errors == 1
        loop = asyncio.create_task(stage.intake.run())
        try:
            while not stage.resent:
                await asyncio.sleep(0.001)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        assert stage.resent == [["a", "b"]]
        await stage.confirmer.confirm(["a", "b"])  # the retry succeeds
        assert [j.uuid for j in stage.admitted] == ["a", "b"]

    run(scenario)


def test_records_from_the_sweep_are_filtered_the_same_way() -> None:
    async def scenario() -> None:
        stage = Stage()
        stage.intake.cancel("cancelled")
        await stage.confirmer.accept(
            [
                record("good"),
                record("cancelled"),
                record("other", rules=("queue=x",)),
                record("gone", state="expired"),
            ]
        )
        assert [j.uuid for j in stage.admitted] == ["good"]
        assert stage.graphql.requests == []  # the sweep's records need no second query

    run(scenario)


def test_the_remaining_graphql_budget_is_exported() -> None:
    async def scenario() -> None:
        stage = Stage([record("a")])
        stage.graphql.budget = Budget(remaining=1234)
        await stage.confirmer.confirm(["a"])
        value = stage.metrics.registry.get_sample_value("buildkite_controller_graphql_budget_remaining")
        assert value == 1234

    run(scenario)


def test_to_job_parses_agent_query_rules_into_tags() -> None:
    job = to_job(record("a", rules=("queue=kubernetes", "arch=arm64", "flag")))
    assert job.agent_tags == {"queue": "kubernetes", "arch": "arm64", "flag": ""}
