"""``Creator``: build the pod and create it, and say what happened as a value — ``Created``, ``Exists``,
``Retry`` (after how long, and whether a quota refused it) or ``Failed`` (with the message the job's users
read). It decides nothing else: no retries, no failing of jobs (admission does both).

The gateway is ``FakeGateway`` (the ``KubeGateway`` protocol in memory, with one-shot faults).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import app.create
from app.create import MAX_BACKOFF_SECONDS, QUOTA_RETRY_SECONDS, Created, Creator, Exists, Failed, Retry
from app.errors import AlreadyExists, Conflict, Forbidden, Invalid, KubeError, KubeUnavailable
from app.metrics import Metrics
from podspec import KUBERNETES_PLUGIN_KEY, Job, PodConfig
from tests.app.fake_gateway import FakeGateway

UUID = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
POD = f"buildkite-{UUID}"


def job(plugin: dict[str, Any] | None = None, uuid: str = UUID) -> Job:
    env = {"BUILDKITE_PLUGINS": json.dumps([{KUBERNETES_PLUGIN_KEY: plugin}])} if plugin is not None else {}
    return Job(uuid=uuid, command="make test", env=env, agent_tags={"queue": "kubernetes"})


class World:
    def __init__(self) -> None:
        self.kube = FakeGateway()
        self.metrics = Metrics()
        self.creator = Creator(
            kube=self.kube, pod_config=PodConfig(namespace="buildkite"), metrics=self.metrics
        )

    def create(self, the_job: Job | None = None, *, attempt: int = 1) -> object:
        return asyncio.run(self.creator.create(the_job or job(), attempt=attempt))

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(f"buildkite_controller_{name}", labels or {})
        return value or 0.0


def faulty(error: KubeError) -> World:
    world = World()
    world.kube.fail_next("create_pod", error)
    return world


def test_a_job_gets_its_pod() -> None:
    world = World()
    assert world.create() == Created(POD)
    pod = world.kube.pods[POD]
    assert pod["metadata"]["labels"]["buildkite.com/job-uuid"] == UUID
    assert world.metric("pods_created_total") == 1


def test_already_exists_is_exists_not_an_error() -> None:
    world = faulty(AlreadyExists(409, "AlreadyExists", f'pods "{POD}" already exists'))
    assert world.create() == Exists(POD)
    assert world.metric("duplicates_avoided_total", {"stage": "create"}) == 1
    assert world.metric("pods_created_total") == 0


def test_a_second_create_of_the_same_job_is_exists_and_makes_no_second_pod() -> None:
    world = World()
    assert world.create() == Created(POD)
    assert world.create(attempt=2) == Exists(POD)
    assert len(world.kube.pods) == 1


def test_invalid_is_failed_with_every_cause_in_the_message() -> None:
    world = World()
    causes = ["spec.containers[0].image: Required value", "spec.volumes[1].name: Duplicate value"]
    world.kube.fail_next("create_pod", Invalid(422, "Invalid", f'Pod "{POD}" is invalid', causes))
    outcome = world.create()
    assert isinstance(outcome, Failed) and outcome.reason == "invalid"
    assert f'Pod "{POD}" is invalid' in outcome.message
    for cause in causes:
        assert f"\n  - {cause}" in outcome.message
    assert world.metric("pod_create_errors_total", {"reason": "Invalid"}) == 1


def test_forbidden_by_policy_is_failed() -> None:
    world = World()
    message = 'pods "x" is forbidden: violates PodSecurity "restricted:latest"'
    world.kube.fail_next("create_pod", Forbidden(403, "Forbidden", message, is_quota=False))
    outcome = world.create()
    assert isinstance(outcome, Failed) and outcome.reason == "forbidden"
    assert "violates PodSecurity" in outcome.message


def test_forbidden_by_quota_is_a_quota_retry_not_a_failure() -> None:
    world = World()
    message = 'pods "x" is forbidden: exceeded quota: compute-resources'
    world.kube.fail_next("create_pod", Forbidden(403, "Forbidden", message, is_quota=True))
    outcome = world.create()
    assert outcome == Retry(QUOTA_RETRY_SECONDS, f"quota: {message}", quota=True)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(KubeUnavailable(503, "ServiceUnavailable", "", retry_after=7.0), id="503"),
        pytest.param(KubeUnavailable(429, "TooManyRequests", "slow down", retry_after=7.0), id="429"),
    ],
)
def test_an_overloaded_apiserver_is_retried_after_its_retry_after(error: KubeError) -> None:
    outcome = faulty(error).create(attempt=6)
    assert isinstance(outcome, Retry) and outcome.after == 7.0 and not outcome.quota


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(KubeUnavailable(500, "InternalError", "etcd timeout"), id="500"),
        pytest.param(KubeUnavailable(0, "ConnectionError", "refused"), id="connection"),
        pytest.param(Conflict(409, "Conflict", "changed"), id="conflict"),
    ],
)
def test_a_temporary_failure_is_retried_with_a_back_off_that_grows_with_the_attempt(error: KubeError) -> None:
    for attempt, low, high in [
        (1, 0.2, 0.4),
        (4, 1.6, 3.2),
        (30, MAX_BACKOFF_SECONDS / 2, MAX_BACKOFF_SECONDS),
    ]:
        outcome = faulty(error).create(attempt=attempt)
        assert isinstance(outcome, Retry) and not outcome.quota
        assert low <= outcome.after <= high, (attempt, outcome.after)


def test_a_build_error_is_failed_naming_the_field_and_nothing_is_sent() -> None:
    world = World()
    outcome = world.create(job({"podSpec": {"containers": [{"image": 3}]}}))
    assert isinstance(outcome, Failed) and outcome.reason == "build_error"
    assert (
        "kubernetes.podSpec.containers[0].image" in outcome.message and "must be a string" in outcome.message
    )
    assert world.kube.calls_of("create_pod") == []


def test_unreadable_plugins_json_is_failed() -> None:
    outcome = World().create(Job(uuid=UUID, env={"BUILDKITE_PLUGINS": "{not json"}))
    assert isinstance(outcome, Failed) and outcome.reason == "build_error"
    assert "BUILDKITE_PLUGINS" in outcome.message


def test_a_missing_pod_template_is_failed_with_a_clear_message() -> None:
    world = World()
    outcome = world.create(job({"podTemplate": "gpu-runner"}))
    assert isinstance(outcome, Failed) and outcome.reason == "build_error"
    assert "kubernetes.podTemplate" in outcome.message
    assert "PodTemplate 'gpu-runner' not found in namespace 'buildkite'" in outcome.message
    assert world.kube.calls_of("get_pod_template") == ["gpu-runner"]
    assert world.kube.calls_of("create_pod") == []


def test_a_pod_template_without_a_spec_is_failed() -> None:
    world = World()
    world.kube.templates["empty"] = {"metadata": {"name": "empty"}, "template": {}}
    outcome = world.create(job({"podTemplate": "empty"}))
    assert isinstance(outcome, Failed) and "PodTemplate 'empty' has no template.spec" in outcome.message


def test_the_pod_template_spec_is_used_for_the_pod() -> None:
    world = World()
    spec = {
        "nodeSelector": {"pool": "gpu"},
        "containers": [{"name": "build", "image": "nvidia/cuda:12.4.0-base-ubuntu22.04"}],
    }
    world.kube.templates["gpu-runner"] = {"metadata": {"name": "gpu-runner"}, "template": {"spec": spec}}
    assert world.create(job({"podTemplate": "gpu-runner"})) == Created(POD)
    pod = world.kube.pods[POD]
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert "nvidia/cuda:12.4.0-base-ubuntu22.04" in [c["image"] for c in pod["spec"]["containers"]]


def test_an_apiserver_error_while_reading_the_template_is_retried_not_failed() -> None:
    world = World()
    world.kube.fail_next("get_pod_template", KubeUnavailable(503, "ServiceUnavailable", "", retry_after=2.0))
    assert world.create(job({"podTemplate": "t"})) == Retry(2.0, "Kubernetes 503 ServiceUnavailable: ")
    assert world.kube.calls_of("create_pod") == []


def test_a_crash_while_building_is_failed_with_the_error_instead_of_stranding_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_build(*args: object, **kwargs: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(app.create, "build", broken_build)
    world = World()
    outcome = world.create()
    assert isinstance(outcome, Failed) and outcome.reason == "internal_error"
    assert "KeyError" in outcome.message and "surprise" in outcome.message
    assert world.kube.pods == {}


def test_an_unexpected_error_from_the_api_client_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()

    async def broken_create(manifest: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("session closed")

    monkeypatch.setattr(world.kube, "create_pod", broken_create)
    outcome = world.create()
    assert isinstance(outcome, Retry) and outcome.reason == "unexpected RuntimeError" and not outcome.quota
    assert 0 < outcome.after <= MAX_BACKOFF_SECONDS
