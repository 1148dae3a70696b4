"""Webhook → confirm → pod, end to end over HTTP against the fakes (issue: the controller service)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from app.simulate.webhook_sender import sign
from tests.flow.harness import WEBHOOK_SECRET, running_stack, wait_until

K8S_PLUGIN = "kubernetes"


@pytest.fixture
def stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    with running_stack(tmp_path) as running:
        yield running


def test_signed_webhook_creates_the_agent_pod(stack) -> None:  # type: ignore[no-untyped-def]
    uuid = stack.buildkite.add_job(
        command="make test",
        plugins=[
            {
                K8S_PLUGIN: {
                    "podSpec": {"containers": [{"image": "golang:1.23", "command": ["go test ./..."]}]}
                }
            }
        ],
    )
    [delivery] = stack.scheduled(uuid)
    assert delivery.status == 202
    pod = wait_until(lambda: stack.pod_for(uuid), what="the pod")
    labels = pod["metadata"]["labels"]
    assert labels["buildkite.com/job-uuid"] == uuid
    assert labels["tag.buildkite.com/queue"] == "kubernetes"
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert containers["container-0"]["image"] == "golang:1.23"
    env = {e["name"]: e.get("value") for e in containers["agent"]["env"]}
    assert env["BUILDKITE_AGENT_ACQUIRE_JOB"] == uuid
    assert pod["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Buildkite-Signature": "timestamp=1,signature=00"}, id="bad-signature"),
        pytest.param({}, id="unsigned"),
        pytest.param({"X-Buildkite-Token": "guess"}, id="wrong-token-mode"),
    ],
)
def test_bad_auth_is_401_and_creates_nothing(stack, headers) -> None:  # type: ignore[no-untyped-def]
    uuid = stack.buildkite.add_job()
    body = stack.sender.job_body("job.scheduled", stack.buildkite.job(uuid))
    response = stack.post(
        "/webhooks/buildkite", content=body, headers={"X-Buildkite-Event": "job.scheduled", **headers}
    )
    assert response.status_code == 401
    assert stack.pods() == []


def post_signed(stack, body: bytes, *, age_seconds: int = 0):  # type: ignore[no-untyped-def]
    """POST ``body`` as job.scheduled, signed like Buildkite at ``age_seconds`` ago."""
    header = sign(WEBHOOK_SECRET, int(time.time()) - age_seconds, body)
    return stack.post(
        "/webhooks/buildkite",
        content=body,
        headers={"X-Buildkite-Event": "job.scheduled", "X-Buildkite-Signature": header},
    )


def test_stale_timestamp_is_401(stack) -> None:  # type: ignore[no-untyped-def]
    uuid = stack.buildkite.add_job()
    body = stack.sender.job_body("job.scheduled", stack.buildkite.job(uuid))
    assert post_signed(stack, body, age_seconds=600).status_code == 401
    assert stack.pods() == []


def test_garbage_body_is_400_with_a_reason(stack) -> None:  # type: ignore[no-untyped-def]
    response = post_signed(stack, b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]


def test_oversized_body_is_413(stack) -> None:  # type: ignore[no-untyped-def]
    assert post_signed(stack, b"{" + b" " * (2 * 1024 * 1024) + b"}").status_code == 413


def test_ping_and_other_events_are_ignored_with_200(stack) -> None:  # type: ignore[no-untyped-def]
    [delivery] = stack.sender.ping()
    assert delivery.status == 200
    uuid = stack.buildkite.add_job()
    [delivery] = stack.sender.send_job_event("job.started", stack.buildkite.job(uuid))
    assert delivery.status == 200


def test_job_for_another_queue_is_ignored(stack) -> None:  # type: ignore[no-untyped-def]
    uuid = stack.buildkite.add_job(agents={"queue": "elsewhere"})
    [delivery] = stack.scheduled(uuid)
    assert delivery.status == 200
    assert stack.post("/reconcile").json()["queued"] == 0
    assert stack.pods() == []


def test_dropped_webhook_is_caught_by_the_sweep(stack) -> None:  # type: ignore[no-untyped-def]
    uuid = stack.buildkite.add_job()
    summary = stack.post("/reconcile").json()
    # The leader's own timer sweep may have found it first; either way exactly one sweep handed it over.
    assert summary["seen"] == 1 and summary["queued"] + summary["already_known"] == 1
    wait_until(lambda: stack.pod_for(uuid), what="the pod the sweep asked for")
    metrics = stack.get("/metrics").text
    assert "buildkite_controller_sweep_unannounced_jobs_total 1.0" in metrics


def test_same_webhook_five_times_and_a_sweep_make_one_pod(stack) -> None:  # type: ignore[no-untyped-def]
    uuid = stack.buildkite.add_job()
    threads = [threading.Thread(target=stack.scheduled, args=(uuid,)) for _ in range(5)]
    for thread in threads:
        thread.start()
    summary = stack.post("/reconcile").json()
    for thread in threads:
        thread.join()
    wait_until(lambda: stack.pod_for(uuid), what="the pod")
    assert len(stack.pods()) == 1
    assert summary["queued"] + summary["already_known"] >= 1
    creates = stack.kube.request_count("create", "pods")
    assert creates == 1


def test_job_cancelled_before_confirm_gets_no_pod(stack) -> None:  # type: ignore[no-untyped-def]
    uuid = stack.buildkite.add_job()
    stack.buildkite.cancel(uuid)
    [delivery] = stack.scheduled(uuid)  # the late job.scheduled webhook of a job cancelled meanwhile
    assert delivery.status == 202
    wait_until(lambda: stack.buildkite.calls_to("/v1"), what="the confirm call")
    assert stack.post("/reconcile").json()["queued"] == 0
    assert stack.pods() == []


def test_invalid_plugin_config_fails_the_job_with_the_message(stack) -> None:  # type: ignore[no-untyped-def]
    uuid = stack.buildkite.add_job(plugins=[{K8S_PLUGIN: {"podSpec": {"containers": [{"image": 3}]}}}])
    stack.scheduled(uuid)
    wait_until(lambda: stack.buildkite.job(uuid).state == "finished", what="the job failed")
    log = stack.buildkite.log(uuid).decode()
    assert "podSpec.containers[0].image" in log
    assert stack.buildkite.job(uuid).exit_status in ("-1", -1)
    assert stack.pods() == []


def test_several_queues_are_served_by_one_controller(tmp_path: Path) -> None:
    with running_stack(tmp_path, flags={"queue": "build,deploy"}) as stack:
        first = stack.buildkite.add_job(agents={"queue": "build"})
        second = stack.buildkite.add_job(agents={"queue": "deploy"})
        other = stack.buildkite.add_job(agents={"queue": "kubernetes"})
        stack.scheduled(first)
        summary = stack.post("/reconcile").json()
        wait_until(lambda: stack.pod_for(first) and stack.pod_for(second), what="both pods")
        assert stack.pod_for(other) is None
        assert summary["queued"] + summary["already_known"] == 2


def test_max_in_flight_is_never_exceeded(tmp_path: Path) -> None:
    with running_stack(tmp_path, flags={"max-in-flight": 3}) as stack:
        uuids = [stack.buildkite.add_job() for _ in range(8)]
        for uuid in uuids:
            stack.scheduled(uuid)
        wait_until(lambda: len(stack.pods()) == 3, what="three pods")
        # Nothing finishes, so nothing more may start, however often we ask.
        stack.post("/reconcile")
        # The other five wait in admission (their confirms may still be on the way).
        wait_until(
            lambda: "buildkite_controller_admission_queue_depth 5.0" in stack.get("/metrics").text,
            what="five jobs queued",
        )
        assert len(stack.pods()) == 3


def test_higher_priority_jobs_are_admitted_first(tmp_path: Path) -> None:
    with running_stack(tmp_path, flags={"max-in-flight": 1}) as stack:
        blocker = stack.buildkite.add_job()
        stack.scheduled(blocker)
        wait_until(lambda: stack.pod_for(blocker), what="the first pod")
        low = stack.buildkite.add_job(priority=1)
        high = stack.buildkite.add_job(priority=10)
        stack.post("/reconcile")
        stack.kube.remove("pods", f"buildkite-{blocker}", "buildkite")
        wait_until(lambda: stack.pod_for(high), what="the high-priority pod")
        assert stack.pod_for(low) is None


def test_graphql_429_is_retried_after_retry_after(stack) -> None:  # type: ignore[no-untyped-def]
    stack.buildkite.inject("graphql", status=429, retry_after=1, count=1)
    uuid = stack.buildkite.add_job()
    stack.scheduled(uuid)
    wait_until(lambda: stack.pod_for(uuid), timeout=10, what="the pod after the 429")
    calls = sorted(stack.buildkite.calls_to("/v1"), key=lambda call: call.time)
    refused = next(i for i, call in enumerate(calls) if call.status == 429)
    # Whichever call met the 429 (a sweep or the confirm), no GraphQL call went out before Retry-After —
    # except one already on its way when the 429 was answered (they arrive within milliseconds).
    too_soon = [c for c in calls[refused + 1 :] if 0.05 < c.time - calls[refused].time < 0.9]
    assert too_soon == []


@pytest.mark.parametrize(
    "fault",
    [{"status": 502}, {"errors": [{"message": "Internal server error"}]}],
    ids=["graphql-5xx", "graphql-errors"],
)
def test_graphql_failures_still_create_the_pod(stack, fault) -> None:  # type: ignore[no-untyped-def]
    stack.buildkite.inject("graphql", count=1, **fault)
    uuid = stack.buildkite.add_job()
    stack.scheduled(uuid)
    wait_until(lambda: stack.pod_for(uuid), timeout=10, what="the pod after the fault")


def test_kubernetes_500_then_success_makes_one_pod(stack) -> None:  # type: ignore[no-untyped-def]
    stack.kube.inject("create", "pods", status=500, count=1)
    uuid = stack.buildkite.add_job()
    stack.scheduled(uuid)
    wait_until(lambda: stack.pod_for(uuid), timeout=10, what="the pod after the 500")
    assert len(stack.pods()) == 1


def test_ops_endpoints(stack) -> None:  # type: ignore[no-untyped-def]
    assert stack.get("/healthz").json() == {"status": "ok"}
    ready = stack.get("/readyz").json()
    assert ready["ready"] is True
    text = stack.get("/metrics").text
    assert "buildkite_controller_webhooks_total" in text or "buildkite_controller_pods_in_flight" in text


def test_secrets_never_appear_in_responses_or_metrics(stack) -> None:  # type: ignore[no-untyped-def]
    for path in ("/metrics", "/readyz", "/healthz"):
        text = stack.get(path).text
        assert WEBHOOK_SECRET not in text and stack.buildkite.api_token not in text


def test_reconcile_summary_is_json(stack) -> None:  # type: ignore[no-untyped-def]
    summary = stack.post("/reconcile").json()
    assert set(summary) >= {"seen", "already_known", "created", "filtered", "queued"}
    json.dumps(summary)


def test_a_failed_sweep_does_not_take_the_replica_out_of_service(stack) -> None:  # type: ignore[no-untyped-def]
    stack.buildkite.inject("graphql", status=401, count=3)  # permanent for a call: no retries
    response = stack.post("/reconcile")
    assert response.status_code == 502 and response.json()["error"]
    assert stack.get("/readyz").status_code == 200  # GraphQL answered a moment ago


def test_the_webhook_path_answers_other_methods_405_and_creates_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    for method in ("GET", "PUT", "DELETE"):
        response = stack.http.request(method, stack.controller.url + "/webhooks/buildkite")
        assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert stack.pods() == []


def test_a_repeated_signature_header_is_refused_at_the_route(stack) -> None:  # type: ignore[no-untyped-def]
    uuid = stack.buildkite.add_job()
    body = stack.sender.job_body("job.scheduled", stack.buildkite.job(uuid))
    good = sign(WEBHOOK_SECRET, int(time.time()), body)
    headers = [
        ("X-Buildkite-Event", "job.scheduled"),
        ("X-Buildkite-Signature", good),
        ("X-Buildkite-Signature", good),
    ]
    response = stack.post("/webhooks/buildkite", content=body, headers=headers)
    assert response.status_code == 401 and "repeated" in response.json()["error"]
    assert stack.pods() == []
