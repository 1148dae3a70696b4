"""What attaching the failed containers' output (issue 13) costs a failure report, measured.

The real controller (uvicorn, in this process's background thread) against the fake apiserver and the
fake Buildkite, as in `tests/flow/`. Each sample writes an init-container failure (copy-agent printed
200 lines and exited 1) into a pod and stops the clock when the job is failed in Buildkite:

- without logs   pod-log-lines 0
- with logs      pod-log-lines 50 (the default): the log is read, redacted and attached
- hung read      every pods/log request stalls 30 s: the report waits for the 3 s log deadline only

    python bench/bench_pod_logs.py [--samples 10]    # prints one JSON object, milliseconds and bytes
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.flow.harness import running_stack, wait_until
from tests.flow.test_lifecycle_flow import job_with_pod
from tests.flow.test_pod_logs_flow import fail_copy_agent


def sample(*, lines: str, samples: int, hang: bool = False) -> dict[str, Any]:
    millis: list[float] = []
    size = 0
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_stack(Path(tmp), flags={"pod-log-lines": lines}) as stack,
    ):
        for _ in range(samples):
            uuid = job_with_pod(stack)
            if hang:
                stack.kube.inject("get", "pods/log", delay=30)
            written = fail_copy_agent(stack, uuid, "log=200 exit=1")
            wait_until(lambda u=uuid: stack.buildkite.job(u).state == "finished", timeout=15, what="failed")
            millis.append((time.monotonic() - written) * 1000)
            size = len(stack.buildkite.log(uuid))
            stack.kube.clear_faults()
    return {
        "median_ms": round(statistics.median(millis), 1),
        "max_ms": round(max(millis), 1),
        "job_log_bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    result = {
        "samples": args.samples,
        "without_logs": sample(lines="0", samples=args.samples),
        "with_logs": sample(lines="50", samples=args.samples),
        "hung_read": sample(lines="50", samples=max(1, args.samples // 5), hang=True),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
