"""Run `buildkite-controller simulate` as a child process and talk to it, for tests and benchmarks.

`SimulateProcess` starts the command, reads the one JSON line it prints (its `info`), and offers the
HTTP calls a load test makes: bulk jobs, webhook bodies, pod summaries, request and finish counts.
`spawn` is the shared subprocess helper: output goes to a file, never a pipe nobody reads (a full
pipe would stall the child).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from app.config import OPTIONS_BY_KEY
from app.simulate.started import Started

COMMAND = [sys.executable, "-m", "app.cli"]


def controller_env(info: dict[str, Any], *, webhook_secret: str, **settings: str) -> dict[str, str]:
    """Environment for `buildkite-controller serve` aimed at a running `simulate` (its JSON line
    `info`), plus ``settings`` keyed like config options (``max_in_flight`` for ``max-in-flight``)."""
    values = {
        "token": info["token"],
        "org": info["org"],
        "agent-token": info["agent_token"],
        "graphql-endpoint": info["graphql_endpoint"],
        "agent-endpoint": info["agent_endpoint"],
        "webhook-secret": webhook_secret,
        "kubeconfig": info["kubeconfig"],
        "namespace": info["namespace"],
        "queue": info["queue"],
        "host": "127.0.0.1",
        **{key.replace("_", "-"): value for key, value in settings.items()},
    }
    return {OPTIONS_BY_KEY[key].env_name: value for key, value in values.items()}


def spawn(
    args: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None, stdout_pipe: bool = False
) -> subprocess.Popen[bytes]:
    """Start `buildkite-controller <args>`; stderr (and stdout unless piped) appended to `log_path`."""
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            [*COMMAND, *args],
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            env={**os.environ, **(env or {})},
        )
    finally:
        log.close()  # the child holds its own descriptor


def read_line(stream: IO[bytes], *, timeout: float, what: str) -> bytes:
    """The first line of `stream`, or an error naming `what` after `timeout` seconds."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    try:
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise TimeoutError(f"{what} printed no line within {timeout} s")
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"{what} exited before printing its line (got {buffer[:200]!r})")
            buffer += chunk
    finally:
        selector.close()
    return buffer.split(b"\n", 1)[0]


def terminate(process: subprocess.Popen[bytes], *, timeout: float = 20.0) -> int:
    """SIGTERM, wait; SIGKILL if it does not exit in time. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


class SimulateProcess(Started):
    """`buildkite-controller simulate` in a child process; `info` is the JSON line it printed."""

    def __init__(self, workdir: Path, *, extra_args: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self.log_path = workdir / "simulate.log"
        self._args = ["simulate", "--kubeconfig-out", str(self.kubeconfig), *extra_args]
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.http = httpx.Client(timeout=60)

    def start(self, *, timeout: float = 30.0) -> dict[str, Any]:
        self.process = spawn(self._args, log_path=self.log_path, stdout_pipe=True)
        assert self.process.stdout is not None
        try:
            self.info = json.loads(read_line(self.process.stdout, timeout=timeout, what="simulate"))
        except BaseException:
            self.stop()
            raise
        return self.info

    def stop(self) -> int:
        self.http.close()
        return terminate(self.process) if self.process is not None else 0

    # -- the fake Buildkite ---------------------------------------------------------------------

    def buildkite(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, self.info["buildkite_url"] + path, **kwargs)

    def add_jobs(self, count: int, **job: Any) -> list[str]:
        response = self.buildkite("POST", "/_test/jobs/bulk", json={"count": count, "job": job})
        response.raise_for_status()
        return list(response.json()["ids"])

    def webhook_bodies(self, ids: Sequence[str], *, event: str = "job.scheduled") -> list[bytes]:
        response = self.buildkite("POST", "/_test/webhook-bodies", json={"event": event, "ids": list(ids)})
        response.raise_for_status()
        return [text.encode() for text in response.json()["bodies"]]

    def jobs(self) -> list[dict[str, Any]]:
        response = self.buildkite("GET", "/_test/jobs")
        response.raise_for_status()
        return list(response.json())

    def finish_counts(self) -> dict[str, int]:
        response = self.buildkite("GET", "/_test/finish-counts")
        response.raise_for_status()
        return dict(response.json())

    # -- the fake apiserver ---------------------------------------------------------------------

    def kube(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, self.info["kube_url"] + path, **kwargs)

    def pods(self) -> list[dict[str, Any]]:
        response = self.kube("GET", "/_test/pods", params={"namespace": self.info["namespace"]})
        response.raise_for_status()
        return list(response.json()["pods"])

    def created(self, resource: str = "pods") -> list[str]:
        """Names of every create the fake apiserver accepted, in order (deleted objects included)."""
        response = self.kube("GET", "/_test/created", params={"resource": resource})
        response.raise_for_status()
        return list(response.json()["created"])

    def request_count(self, verb: str = "", resource: str = "") -> int:
        response = self.kube("GET", "/_test/requests", params={"verb": verb, "resource": resource})
        response.raise_for_status()
        return int(response.json()["count"])
