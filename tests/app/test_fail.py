"""JobFailer: a job is failed in Buildkite at most once, whatever asks how often."""

from __future__ import annotations

import asyncio

from app.buildkite.agent_api import FailOutcome
from app.errors import BuildkiteUnavailable
from app.fail import JobFailer
from app.metrics import Metrics

UUID = "0199a1b2-0000-4000-8000-000000000001"


class FakeAgentAPI:
    def __init__(self, *outcomes: FailOutcome | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, str]] = []

    async def fail_job(self, uuid: str, message: str) -> FailOutcome:
        self.calls.append((uuid, message))
        await asyncio.sleep(0)  # let concurrent callers pile up behind this one
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def failer(api: FakeAgentAPI | None) -> JobFailer:
    return JobFailer(api, metrics=Metrics())  # type: ignore[arg-type]


def test_concurrent_and_repeated_failures_call_buildkite_once() -> None:
    api = FakeAgentAPI(FailOutcome.FAILED)
    jobs = failer(api)

    async def scenario() -> list[str]:
        first = await asyncio.gather(*(jobs.fail(UUID, reason="image_pull", message="m") for _ in range(5)))
        return [*first, await jobs.fail(UUID, reason="image_pull", message="again")]

    assert asyncio.run(scenario()) == ["failed"] * 6
    assert len(api.calls) == 1


def test_a_job_an_agent_already_holds_is_not_failed_and_not_retried() -> None:
    api = FakeAgentAPI(FailOutcome.NOT_ACQUIRABLE)
    jobs = failer(api)

    async def scenario() -> tuple[str, str]:
        return await jobs.fail(UUID, reason="r", message="m"), await jobs.fail(UUID, reason="r", message="m")

    assert asyncio.run(scenario()) == ("not_acquirable", "not_acquirable")
    assert len(api.calls) == 1


def test_a_buildkite_error_is_reported_and_may_be_retried_later() -> None:
    api = FakeAgentAPI(BuildkiteUnavailable("HTTP 503"), FailOutcome.FAILED)
    jobs = failer(api)

    async def scenario() -> tuple[str, str]:
        return await jobs.fail(UUID, reason="r", message="m"), await jobs.fail(UUID, reason="r", message="m")

    assert asyncio.run(scenario()) == ("error", "failed")
    assert len(api.calls) == 2


def test_without_an_agent_token_nothing_is_sent() -> None:
    assert asyncio.run(failer(None).fail(UUID, reason="r", message="m")) == "disabled"
