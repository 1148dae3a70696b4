"""``Creator``: build the pod and create it; AlreadyExists is success, permanent refusals fail the job,
temporary ones requeue it later.

Collaborators are in memory: ``FakeGateway`` (the ``KubeGateway`` protocol, with one-shot faults),
``FakeFailer`` (records each job failure), a real ``Intake`` for the stage bookkeeping, and a requeue
recorder. Retry delays are module constants, shortened here so a test waits milliseconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import app.create
from app.create import Creator
from app.errors import AlreadyExists, Conflict, Forbidden, Invalid, KubeError, KubeUnavailable
from app.intake import Intake
from app.metrics import Metrics
from app.timings import Timings
from podspec import KUBERNETES_PLUGIN_KEY, Job, PodConfig
from tests.app.fake_gateway import FakeFailer, FakeGateway

UUID = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
POD = f"buildkite-{UUID}"


def job(plugin: dict[str, Any] | None = None, uuid: str = UUID) -> Job:
    env = {"BUILDKITE_PLUGINS": json.dumps([{KUBERNETES_PLUGIN_KEY: plugin}])} if plugin is not None else {}
    return Job(uuid=uuid, command="make test", env=env, agent_tags={"queue": "kubernetes"})


class Stage:
    def __init__(self) -> None:
        self.kube = FakeGateway()
        self.failer = FakeFailer()
        self.metrics = Metrics()
        self.requeued: list[Job] = []
        self.intake = Intake(
            batch_size=100,
            window_seconds=0,
            confirm=self._never,
            accept=self._never,
            has_pod=lambda uuid: False,
            metrics=self.metrics,
        )
        self.creator = Creator(
            kube=self.kube,
            pod_config=PodConfig(namespace="buildkite"),
            failer=self.failer,  # type: ignore[arg-type]
            intake=self.intake,
            requeue=self.requeued.append,
            metrics=self.metrics,
            timings=Timings(self.metrics),
        )

    async def _never(self, items: object) -> None:
        raise AssertionError("the create stage never feeds the intake")

    def stage_of(self, uuid: str = UUID) -> str:
        return self.intake.entries[uuid].stage

    def failure(self) -> tuple[str, str]:
        [(uuid, reason, message)] = self.failer.calls
        assert uuid == UUID
        return reason, message

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(f"buildkite_controller_{name}", labels or {})
        return value or 0.0


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


async def until_requeued(stage: Stage, count: int = 1) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(stage.requeued) < count:
        assert loop.time() < deadline, "the job was never requeued"
        await asyncio.sleep(0.002)


@pytest.fixture(autouse=True)
def short_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 s (quota) and up to 30 s (back-off) in production; what is tested is that a retry is
    # scheduled later and not at once, so a few milliseconds keep the suite fast.
    monkeypatch.setattr(app.create, "QUOTA_RETRY_SECONDS", 0.02)
    monkeypatch.setattr(app.create, "MAX_BACKOFF_SECONDS", 0.02)


def test_a_job_gets_its_pod_and_is_done() -> None:
    async def scenario() -> None:
        stage = Stage()
        assert await stage.creator.create(job()) is True
        pod = stage.kube.pods[POD]
        assert pod["metadata"]["labels"]["buildkite.com/job-uuid"] == UUID
        assert stage.stage_of() == "done"
        assert stage.metric("pods_created_total") == 1
        assert stage.failer.calls == [] and stage.requeued == []

    run(scenario)


def test_already_exists_counts_as_success() -> None:
    async def scenario() -> None:
        stage = Stage()
        stage.kube.fail_next(
            "create_pod", AlreadyExists(409, "AlreadyExists", f'pods "{POD}" already exists')
        )
        assert await stage.creator.create(job()) is True
        assert stage.stage_of() == "done"
        assert stage.metric("duplicates_avoided_total", {"stage": "create"}) == 1
        assert stage.metric("pods_created_total") == 0
        assert stage.failer.calls == [] and stage.requeued == []

    run(scenario)


def test_a_second_create_of_the_same_job_is_already_exists_and_fine() -> None:
    async def scenario() -> None:
        stage = Stage()
        assert await stage.creator.create(job()) is True
        assert await stage.creator.create(job()) is True
        assert len(stage.kube.pods) == 1

    run(scenario)


def test_a_cancelled_job_gets_no_pod() -> None:
    async def scenario() -> None:
        stage = Stage()
        stage.intake.cancel(UUID)
        assert await stage.creator.create(job()) is False
        assert stage.kube.calls_of("create_pod") == []

    run(scenario)


def test_invalid_fails_the_job_with_every_cause_in_the_message() -> None:
    async def scenario() -> None:
        stage = Stage()
        causes = ["spec.containers[0].image: Required value", "spec.volumes[1].name: Duplicate value"]
        stage.kube.fail_next("create_pod", Invalid(422, "Invalid", f'Pod "{POD}" is invalid', causes))
        assert await stage.creator.create(job()) is False
        reason, message = stage.failure()
        assert reason == "invalid"
        assert f'Pod "{POD}" is invalid' in message
        for cause in causes:
            assert f"\n  - {cause}" in message
        assert stage.stage_of() == "dropped" and stage.requeued == []
        assert stage.metric("pod_create_errors_total", {"reason": "Invalid"}) == 1

    run(scenario)


def test_forbidden_by_policy_fails_the_job() -> None:
    async def scenario() -> None:
        stage = Stage()
        message = 'pods "x" is forbidden: violates PodSecurity "restricted:latest"'
        stage.kube.fail_next("create_pod", Forbidden(403, "Forbidden", message, is_quota=False))
        assert await stage.creator.create(job()) is False
        reason, text = stage.failure()
        assert reason == "forbidden" and "violates PodSecurity" in text
        assert stage.requeued == []

    run(scenario)


def test_forbidden_by_quota_is_requeued_later_not_failed() -> None:
    async def scenario() -> None:
        stage = Stage()
        message = 'pods "x" is forbidden: exceeded quota: compute-resources'
        stage.kube.fail_next("create_pod", Forbidden(403, "Forbidden", message, is_quota=True))
        assert await stage.creator.create(job()) is False
        assert stage.requeued == []  # not at once: quota frees up as pods finish
        assert stage.stage_of() == "queued"
        await until_requeued(stage)
        assert stage.requeued == [job()] and stage.failer.calls == []
        assert await stage.creator.create(job()) is True  # the retry goes through

    run(scenario)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(KubeUnavailable(500, "InternalError", "etcd timeout"), id="500"),
        pytest.param(KubeUnavailable(503, "ServiceUnavailable", "", retry_after=0.01), id="503-retry-after"),
        pytest.param(KubeUnavailable(429, "TooManyRequests", "", retry_after=0.01), id="429"),
        pytest.param(KubeUnavailable(0, "ConnectionError", "refused"), id="connection"),
        pytest.param(Conflict(409, "Conflict", "changed"), id="conflict"),
    ],
)
def test_a_temporary_failure_is_retried(error: KubeError) -> None:
    async def scenario() -> None:
        stage = Stage()
        stage.kube.fail_next("create_pod", error)
        assert await stage.creator.create(job()) is False
        assert stage.failer.calls == []
        await until_requeued(stage)
        assert await stage.creator.create(stage.requeued[0]) is True
        assert POD in stage.kube.pods

    run(scenario)


def test_retries_back_off_and_a_success_resets_the_count() -> None:
    async def scenario() -> None:
        stage = Stage()
        for attempt in range(1, 4):
            stage.kube.fail_next("create_pod", KubeUnavailable(500, "InternalError", "x"))
            assert await stage.creator.create(job()) is False
            await until_requeued(stage, attempt)
        assert await stage.creator.create(job()) is True
        assert stage.creator._attempts == {}  # nothing kept for a job that is done

    run(scenario)


def test_a_build_error_fails_the_job_with_the_field_path() -> None:
    async def scenario() -> None:
        stage = Stage()
        assert await stage.creator.create(job({"podSpec": {"containers": [{"image": 3}]}})) is False
        reason, message = stage.failure()
        assert reason == "build_error"
        assert "kubernetes.podSpec.containers[0].image" in message and "must be a string" in message
        assert stage.kube.calls_of("create_pod") == [] and stage.stage_of() == "dropped"

    run(scenario)


def test_unreadable_plugins_json_fails_the_job() -> None:
    async def scenario() -> None:
        stage = Stage()
        broken = Job(uuid=UUID, env={"BUILDKITE_PLUGINS": "{not json"})
        assert await stage.creator.create(broken) is False
        reason, message = stage.failure()
        assert reason == "build_error" and "BUILDKITE_PLUGINS" in message

    run(scenario)


def test_a_missing_pod_template_fails_the_job_with_a_clear_message() -> None:
    async def scenario() -> None:
        stage = Stage()
        assert await stage.creator.create(job({"podTemplate": "gpu-runner"})) is False
        reason, message = stage.failure()
        assert reason == "build_error"
        assert "kubernetes.podTemplate" in message
        assert "PodTemplate 'gpu-runner' not found in namespace 'buildkite'" in message
        assert stage.kube.calls_of("get_pod_template") == ["gpu-runner"]

    run(scenario)


def test_a_pod_template_without_a_spec_fails_the_job() -> None:
    async def scenario() -> None:
        stage = Stage()
        stage.kube.templates["empty"] = {"metadata": {"name": "empty"}, "template": {}}
        assert await stage.creator.create(job({"podTemplate": "empty"})) is False
        _, message = stage.failure()
        assert "PodTemplate 'empty' has no template.spec" in message

    run(scenario)


def test_the_pod_template_spec_is_used_for_the_pod() -> None:
    async def scenario() -> None:
        stage = Stage()
        spec = {
            "nodeSelector": {"pool": "gpu"},
            "containers": [{"name": "build", "image": "nvidia/cuda:12.4.0-base-ubuntu22.04"}],
        }
        stage.kube.templates["gpu-runner"] = {"metadata": {"name": "gpu-runner"}, "template": {"spec": spec}}
        assert await stage.creator.create(job({"podTemplate": "gpu-runner"})) is True
        pod = stage.kube.pods[POD]
        assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}
        images = [c["image"] for c in pod["spec"]["containers"]]
        assert "nvidia/cuda:12.4.0-base-ubuntu22.04" in images

    run(scenario)


def test_an_apiserver_error_while_reading_the_template_is_retried_not_failed() -> None:
    async def scenario() -> None:
        stage = Stage()
        stage.kube.fail_next("get_pod_template", KubeUnavailable(503, "ServiceUnavailable", ""))
        assert await stage.creator.create(job({"podTemplate": "t"})) is False
        assert stage.failer.calls == []
        await until_requeued(stage)

    run(scenario)


def test_a_crash_while_building_fails_the_job_instead_of_stranding_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_build(*args: object, **kwargs: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(app.create, "build", broken_build)

    async def scenario() -> None:
        stage = Stage()
        assert await stage.creator.create(job()) is False
        reason, message = stage.failure()
        assert reason == "internal_error" and "KeyError" in message
        assert stage.stage_of() == "dropped" and stage.kube.pods == {}

    run(scenario)


def test_an_unexpected_error_from_the_api_client_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        stage = Stage()

        async def broken_create(manifest: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("session closed")

        monkeypatch.setattr(stage.kube, "create_pod", broken_create)
        assert await stage.creator.create(job()) is False
        await until_requeued(stage)
        assert stage.failer.calls == []

    run(scenario)
