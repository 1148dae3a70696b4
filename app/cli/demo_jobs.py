"""The demo's jobs and the agents that run them.

``demo_jobs(pipeline)`` expands an example pipeline (``app.cli.pipeline``) into the jobs Buildkite would
schedule, plus two that go wrong on purpose: one whose image cannot be pulled (the controller fails it
with the reason) and one whose pod waits until the job is cancelled (the controller deletes the pod).
``schedule`` adds them to the fake Buildkite, which announces each with a signed ``job.scheduled``
webhook.

``DemoRun`` schedules them and plays the rest of Buildkite's side while they run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.pipeline import expand_pipeline

if TYPE_CHECKING:  # for the annotations only: demo_stack imports the fakes
    from app.cli.demo_stack import DemoStack
    from app.simulate.buildkite_server import FakeBuildkite

BROKEN_IMAGE = "registry.example.com/team/does-not-exist:1.0"  # DEFAULT_RULES: the pull fails
WAITING_IMAGE = "registry.example.com/team/huge-image:latest"  # demo_stack: never finishes starting
# Environment the fake derives itself from the job (uuid, build); the pipeline's own values are kept.
_DERIVED_ENV = ("BUILDKITE_JOB_ID", "BUILDKITE_BUILD_", "BUILDKITE_REPO", "BUILDKITE_BRANCH", "BUILDKITE_ORG")


@dataclass(frozen=True)
class DemoJob:
    """One job to schedule; ``expect`` is how it should end in Buildkite (passed, failed, canceled)."""

    label: str
    expect: str
    command: str
    agents: dict[str, str]
    env: dict[str, str]
    step_key: str | None = None
    uuid: str | None = None
    cancel_when_pod_exists: bool = False


def demo_jobs(pipeline: Path, *, queue: str) -> list[DemoJob]:
    step_jobs = expand_pipeline(pipeline.read_text(), file_name=str(pipeline), queue=queue)
    jobs = [
        DemoJob(
            label=step.label or step.key or step.path,
            expect="passed",
            command=step.job.command,
            agents=dict(step.job.agent_tags),
            env={k: v for k, v in step.job.env.items() if not k.startswith(_DERIVED_ENV)},
            step_key=step.key or None,
            uuid=step.job.uuid,
        )
        for step in step_jobs
    ]
    agents = {"queue": queue}
    jobs.append(
        DemoJob(
            label=":boom: broken image",
            expect="failed",
            command="make test",
            agents=agents,
            env={"BUILDKITE_IMAGE": BROKEN_IMAGE},
            step_key="broken-image",
        )
    )
    jobs.append(
        DemoJob(
            label=":hourglass: cancelled while its pod starts",
            expect="canceled",
            command="make deploy",
            agents=agents,
            env={"BUILDKITE_IMAGE": WAITING_IMAGE},
            step_key="cancelled",
            cancel_when_pod_exists=True,
        )
    )
    return jobs


def schedule(buildkite: FakeBuildkite, job: DemoJob, *, pipeline_slug: str) -> str:
    """Add the job to the fake Buildkite (which sends its ``job.scheduled`` webhook); returns its UUID."""
    fields: dict[str, Any] = {
        "command": job.command,
        "agents": job.agents,
        "env": job.env,
        "label": job.label,
        "step_key": job.step_key,
        "pipeline_slug": pipeline_slug,
    }
    if job.uuid is not None:
        fields["uuid"] = job.uuid
    return str(buildkite.add_job(**fields))


class DemoRun:
    """Buildkite's and the agents' side of a demo: ``schedule`` the jobs, then ``step`` often.

    Each step reads the apiserver's pods once and cancels in Buildkite the jobs meant to be cancelled
    once their pod exists (Buildkite then sends the ``job.finished`` webhook). ``stack`` is a started
    ``DemoStack``, whose simulated agents run the jobs of running pods.
    """

    def __init__(self, stack: DemoStack, jobs: list[DemoJob], *, pipeline_slug: str) -> None:
        self._stack = stack
        self._jobs = jobs
        self._slug = pipeline_slug
        self._cancel_when_pod: set[str] = set()

    def schedule(self) -> list[tuple[DemoJob, str, float]]:
        """Each job, its UUID, and when (``time.monotonic()``) its webhook was about to be sent."""
        scheduled = []
        for job in self._jobs:
            at = time.monotonic()
            uuid = schedule(self._stack.buildkite, job, pipeline_slug=self._slug)
            if job.cancel_when_pod_exists:
                self._cancel_when_pod.add(uuid)
            scheduled.append((job, uuid, at))
        return scheduled

    def step(self) -> dict[str, dict[str, Any]]:
        """One look at the pods, acted on; returns them by job UUID."""
        pods = self._stack.pods()
        for uuid in sorted(self._cancel_when_pod & pods.keys()):
            self._cancel_when_pod.discard(uuid)
            self._stack.buildkite.cancel(uuid)
        return pods
