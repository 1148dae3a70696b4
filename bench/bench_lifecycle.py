"""The lifecycle's bounds, measured: how long Buildkite and the cluster disagree after a change.

The real controller (uvicorn, in this process's background thread) against the fake apiserver and the
fake Buildkite, as in `tests/flow/`. Each sample starts a clock when the world changes and stops it
when the controller has acted:

- cancel (webhook)     job cancelled and job.finished sent → its Pending pod is deleted
- cancel (no webhook)  job cancelled, the webhook lost     → deleted by the batched state check (5 s)
- image pull failure   ErrImagePull written to the pod     → job failed in Buildkite (grace 2 s here)
- finished pod         pod Succeeded (retention 0 s here)  → pod deleted

    python bench/bench_lifecycle.py [--samples 10]      # prints one JSON object, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.flow.harness import NAMESPACE, Stack, running_stack, wait_until

Json = dict[str, Any]
GRACE_SECONDS = 2.0


def new_pending_pod(stack: Stack) -> str:
    uuid = stack.buildkite.add_job()
    stack.scheduled(uuid)
    wait_until(lambda: stack.pod_for(uuid), timeout=10, what="the pod")
    return uuid


def write_status(stack: Stack, uuid: str, status: Json) -> float:
    def change(pod: Json) -> None:
        pod["status"] = status

    stack.kube.modify("pods", f"buildkite-{uuid}", change, namespace=NAMESPACE)
    return time.monotonic()


def elapsed_until(started: float, done: Callable[[], object], *, timeout: float = 30) -> float:
    wait_until(done, timeout=timeout, what="the controller to act")
    return time.monotonic() - started


def cancel_with_webhook(stack: Stack) -> float:
    uuid = new_pending_pod(stack)
    stack.buildkite.cancel(uuid)
    started = time.monotonic()
    stack.sender.send_job_event("job.finished", stack.buildkite.job(uuid))
    return elapsed_until(started, lambda: stack.pod_for(uuid) is None)


def cancel_without_webhook(stack: Stack) -> float:
    uuid = new_pending_pod(stack)
    started = time.monotonic()
    stack.buildkite.cancel(uuid)
    return elapsed_until(started, lambda: stack.pod_for(uuid) is None)


def image_pull_failure(stack: Stack) -> float:
    uuid = new_pending_pod(stack)
    pod = stack.pod_for(uuid) or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    statuses = [
        {
            "name": c["name"],
            "image": c["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {
                "waiting": {
                    "reason": "ErrImagePull" if c["name"] == "container-0" else "ContainerCreating",
                    "message": "pull access denied",
                }
            },
        }
        for c in pod["spec"]["containers"]
    ]
    started = write_status(stack, uuid, {"phase": "Pending", "startTime": now, "containerStatuses": statuses})
    return elapsed_until(started, lambda: stack.buildkite.job(uuid).state == "finished")


def finished_pod(stack: Stack) -> float:
    uuid = new_pending_pod(stack)
    started = write_status(stack, uuid, {"phase": "Succeeded"})
    return elapsed_until(started, lambda: stack.pod_for(uuid) is None)


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "max": round(max(samples), 3),
        "median": round(statistics.median(samples), 3),
        "min": round(min(samples), 3),
        "samples": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    flags = {
        "image-pull-backoff-grace-period": f"{GRACE_SECONDS}s",
        "succeeded-pod-retention": "0s",
        "log-level": "warning",
    }
    results: dict[str, Any] = {"image_pull_grace_seconds": GRACE_SECONDS, "check_interval_seconds": 5.0}
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp), flags=flags) as stack:
        for name, measure in (
            ("cancel_with_webhook", cancel_with_webhook),
            ("cancel_without_webhook", cancel_without_webhook),
            ("image_pull_failure_reported", image_pull_failure),
            ("finished_pod_deleted", finished_pod),
        ):
            results[name] = summary([measure(stack) for _ in range(args.samples)])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
