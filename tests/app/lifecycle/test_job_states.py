"""The batched job-state check spends less of the shared GraphQL budget when it runs low."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from app.buildkite.retry import RateBudget
from app.lifecycle.job_states import MAX_POLL_STRETCH, JobStateCheck, budget_stretch

UUID = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


class Source:
    def __init__(self, budget: RateBudget | None) -> None:
        self.budget = budget

    async def job_states(self, uuids: Sequence[str]) -> dict[str, str]:
        return dict.fromkeys(uuids, "scheduled")


@pytest.mark.parametrize(
    ("remaining", "stretch"),
    [
        (None, 1.0),
        (20_000, 1.0),
        (10_000, 1.0),
        (5_000, 2.0),
        (1_000, 10.0),
        (100, MAX_POLL_STRETCH),
        (0, MAX_POLL_STRETCH),
    ],
)
def test_routine_polls_stretch_as_the_budget_runs_low(remaining: int | None, stretch: float) -> None:
    budget = None if remaining is None else RateBudget(remaining=remaining, limit=20_000, reset_at=None)
    assert budget_stretch(Source(budget)) == pytest.approx(stretch)


def test_a_poll_waits_longer_on_a_low_budget_but_a_failure_check_does_not() -> None:
    source = Source(RateBudget(remaining=1_000, limit=20_000, reset_at=None))
    check = JobStateCheck(source, interval_seconds=5)
    check._last_round_at = 100.0
    check.want(UUID)  # a routine poll of a Pending pod
    assert check.due_at() == pytest.approx(150.0)
    check.want(UUID, since=120.0)  # a failure was seen: its state is needed now
    assert check.due_at() == float("-inf")
