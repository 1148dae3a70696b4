"""Issue 13 end to end: a pod that fails before its agent runs the job → the job's Buildkite log holds the
failed containers' own output. The real controller (uvicorn) reads ``pods/log`` from the fake apiserver,
which serves what the simulated kubelet's scripts print, and fails the job in the fake Buildkite.

Bounds: a failure is reported within 2 s of the pod failing (tests/flow/test_lifecycle_flow.py), plus at
most ``pod-log-timeout`` (3 s by default) when a log read hangs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from app.simulate.kubelet import SimulatedKubelet
from tests.flow.harness import NAMESPACE, WEBHOOK_SECRET, Stack, running_stack, wait_until
from tests.flow.test_lifecycle_flow import init_failed, job_with_pod, rfc3339

Json = dict[str, Any]
SCRIPT = "kubelet.simulate/container."


def failed(stack: Stack, uuid: str) -> bool:
    return stack.buildkite.job(uuid).state == "finished"


def fail_copy_agent(stack: Stack, uuid: str, script: str) -> float:
    """copy-agent ran ``script`` and exited 1, as the kubelet would write it; returns when it was written."""

    def change(pod: Json) -> None:
        pod["metadata"].setdefault("annotations", {})[SCRIPT + "copy-agent"] = script
        pod["status"] = init_failed(pod)

    stack.kube.modify("pods", f"buildkite-{uuid}", change, namespace=NAMESPACE)
    return time.monotonic()


def trail_steps(stack: Stack, uuid: str) -> list[tuple[str, str]]:
    job = stack.http.get(f"{stack.controller.url}/jobs/{uuid}", headers={"Accept": "application/json"}).json()
    return [(step["what"], step["detail"]) for step in job["trail"]]


def test_an_init_container_that_prints_200_lines_and_exits_1_shows_its_last_lines(tmp_path: Path) -> None:
    with (
        running_stack(tmp_path) as stack,
        SimulatedKubelet(stack.kube.url, namespace=NAMESPACE, tick_seconds=0.05) as kubelet,
    ):
        kubelet.start()
        annotations = {SCRIPT + "copy-agent": "log=200 say=cp:%20cannot%20create%20/workspace exit=1"}
        uuid = stack.buildkite.add_job(plugins=[{"kubernetes": {"metadata": {"annotations": annotations}}}])
        stack.scheduled(uuid)
        wait_until(lambda: failed(stack, uuid), timeout=20, what="the job failed")
        text = stack.buildkite.log(uuid).decode()
        assert "init containers failed" in text
        assert "+++ init container copy-agent (exit code 1" in text
        lines = text.splitlines()
        last = lines.index("  cp: cannot create /workspace")
        assert lines[last - 1] == "  copy-agent line 200 of 200"
        assert "  copy-agent line 152 of 200" in lines and "  copy-agent line 151 of 200" not in lines, (
            "50 lines"
        )
        logs = [detail for what, detail in trail_steps(stack, uuid) if what == "logs"]
        assert len(logs) == 1 and "attached" in logs[0] and "copy-agent: " in logs[0], logs
        attached = int(logs[0].split("attached ")[1].split(" bytes")[0])
        assert 50 * len("  copy-agent line 200 of 200\n") < attached < 8 * 1024


def test_the_agent_token_and_a_credential_literal_are_redacted(tmp_path: Path) -> None:
    literal = "npm-literal-0123456789"
    step = {"image": "alpine:3.20", "env": [{"name": "NPM_TOKEN", "value": literal}]}
    plugin = {"kubernetes": {"podSpec": {"containers": [step]}}}
    with running_stack(tmp_path) as stack:
        token = stack.buildkite.agent_token
        uuid = job_with_pod(stack, plugins=[plugin])
        said = [f"token {token}", f"npm {literal}", f"hook {WEBHOOK_SECRET}", "plain words"]
        fail_copy_agent(stack, uuid, " ".join(f"say={quote(line)}" for line in said) + " exit=1")
        wait_until(lambda: failed(stack, uuid), timeout=5, what="the job failed")
        text = stack.buildkite.log(uuid).decode()
        assert token not in text and literal not in text and WEBHOOK_SECRET not in text
        for line in ("  token [REDACTED]", "  npm [REDACTED]", "  hook [REDACTED]", "  plain words"):
            assert line in text.splitlines(), text


def test_a_hung_log_read_does_not_hold_the_failure_past_the_log_timeout(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        uuid = job_with_pod(stack)
        stack.kube.inject("get", "pods/log", delay=30, count=10)
        written = fail_copy_agent(stack, uuid, "log=5 exit=1")
        wait_until(lambda: failed(stack, uuid), timeout=8, what="the job failed")
        assert time.monotonic() - written <= 2 + 3
        text = stack.buildkite.log(uuid).decode()
        assert "init containers failed" in text
        assert "+++ init container copy-agent (exit code 1): no log: no answer within 3 s" in text, text


def test_a_pod_deleted_before_its_logs_are_read_fails_with_the_events_and_a_note(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        uuid = job_with_pod(stack)
        name = f"buildkite-{uuid}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.copy", "namespace": NAMESPACE},
            "involvedObject": {"kind": "Pod", "name": name, "namespace": NAMESPACE},
            "type": "Warning",
            "reason": "BackOff",
            "message": "copy-agent: permission denied on /workspace",
            "lastTimestamp": rfc3339(time.time()),
            "count": 1,
        }
        stack.kube.create("events", event, namespace=NAMESPACE)
        # The read reaches the apiserver, which answers only after the pod has gone.
        stack.kube.inject("get", "pods/log", delay=1)
        fail_copy_agent(stack, uuid, "log=5 exit=1")
        wait_until(lambda: stack.kube.request_count("get", "pods/log"), timeout=5, what="the log read")
        stack.kube.remove("pods", name, namespace=NAMESPACE)
        wait_until(lambda: failed(stack, uuid), timeout=5, what="the job failed")
        text = stack.buildkite.log(uuid).decode()
        assert "init containers failed" in text
        assert "copy-agent: permission denied on /workspace" in text, "the events are there"
        assert "no log: the pod is gone (404)" in text
