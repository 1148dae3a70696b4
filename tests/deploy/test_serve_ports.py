"""`serve` with `--ops-port`, as the Deployment runs it: two ports over real sockets, one controller.

Input: `buildkite-controller simulate` (fake apiserver and Buildkite) and `buildkite-controller serve` in
child processes, configured through the environment the Deployment gives it (the ops token from the
Secret). A job pod is any client without the token. Checks: the webhook is served on the main port only
and creates a pod; the ops endpoints on the ops port only; `POST /reconcile` needs the token; SIGTERM
still drains and ends both servers.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.buildkite.signature import sign
from app.simulate.process import SimulateProcess, controller_env, spawn, terminate

SECRET = "serve-ports-webhook-secret"
OPS_TOKEN = "serve-ports-ops-token"
DEADLINE_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: object, *, what: str, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {DEADLINE_SECONDS} s\n{log.read_text()[-3000:]}")


@pytest.fixture
def simulate(tmp_path: Path) -> Iterator[SimulateProcess]:
    workdir = tmp_path / "simulate"
    workdir.mkdir()
    with SimulateProcess(workdir) as process:
        yield process


# Two child processes start and stop here; on a loaded two-core CI machine that can pass the 120 s default.
@pytest.mark.timeout(300)
def test_webhook_and_ops_are_served_on_separate_ports_and_reconcile_needs_the_token(
    simulate: SimulateProcess, tmp_path: Path
) -> None:
    port, ops_port = free_port(), free_port()
    env = controller_env(
        simulate.info, webhook_secret=SECRET, port=str(port), ops_port=str(ops_port), ops_token=OPS_TOKEN
    )
    log = tmp_path / "controller.log"
    process = spawn(["serve"], log_path=log, env=env)
    main, ops = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}"
    try:
        wait_for(lambda: httpx.get(f"{ops}/readyz", timeout=2).status_code == 200, what="ready", log=log)
        for path in ("/readyz", "/healthz", "/metrics", "/"):
            assert httpx.get(main + path, timeout=5).status_code == 404, path
        assert httpx.post(f"{main}/reconcile", timeout=5).status_code == 404
        assert httpx.post(f"{ops}/webhooks/buildkite", content=b"{}", timeout=5).status_code == 404
        assert "buildkite_" in httpx.get(f"{ops}/metrics", timeout=5).text

        (job,) = simulate.add_jobs(1)
        (body,) = simulate.webhook_bodies([job])
        headers = {
            "x-buildkite-event": "job.scheduled",
            "x-buildkite-signature": sign(body, secret=SECRET, timestamp=int(time.time())),
            "content-type": "application/json",
        }
        assert (
            httpx.post(f"{main}/webhooks/buildkite", content=body, headers=headers, timeout=5).status_code
            == 202
        )
        wait_for(lambda: any(job in str(pod) for pod in simulate.pods()), what="the job's pod", log=log)

        refused = httpx.post(f"{ops}/reconcile", timeout=5)
        assert refused.status_code == 401, refused.text
        wrong = httpx.post(f"{ops}/reconcile", headers={"Authorization": "Bearer guess"}, timeout=5)
        assert wrong.status_code == 401
        allowed = httpx.post(f"{ops}/reconcile", headers={"Authorization": f"Bearer {OPS_TOKEN}"}, timeout=60)
        assert allowed.status_code == 200, allowed.text
    finally:
        status = terminate(process, timeout=30)
    text = log.read_text()
    # uvicorn re-raises the signal after its graceful shutdown, so "killed by SIGTERM" is a clean end too.
    assert status in (0, -signal.SIGTERM), text[-3000:]
    assert "Application shutdown complete" in text
    assert OPS_TOKEN not in text


@pytest.mark.timeout(300)
def test_an_ops_port_that_cannot_be_opened_ends_serve_with_an_error(
    simulate: SimulateProcess, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = controller_env(
            simulate.info,
            webhook_secret=SECRET,
            port=str(free_port()),
            ops_port=str(taken.getsockname()[1]),
        )
        log = tmp_path / "controller.log"
        process = spawn(["serve"], log_path=log, env=env)
        try:
            status = process.wait(timeout=DEADLINE_SECONDS)
        finally:
            terminate(process)
    assert status != 0
    assert "address already in use" in log.read_text()
