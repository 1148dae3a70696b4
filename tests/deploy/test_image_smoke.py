"""The image stand-in runs the Deployment's command against a simulated cluster and Buildkite.

Input: the `image` fixture (our wheel in a virtualenv that can import only the runtime dependencies),
the example overlay's ConfigMap and container args, and `buildkite-controller simulate` (the fake
apiserver and fake Buildkite on loopback, in a child process of this test's environment). The check is
what the kubelet would see: /healthz and /readyz answer 200 on the port the probes name (the ops port),
the webhook route answers an unsigned request with a 4xx on the http port, and SIGTERM ends the process
after a graceful shutdown within the pod's terminationGracePeriodSeconds.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.simulate.process import SimulateProcess
from tests.deploy.imageenv import image_environment

Obj = dict[str, Any]
STARTUP_SECONDS = 60


def one(objects: list[Obj], kind: str) -> Obj:
    (match,) = [obj for obj in objects if obj["kind"] == kind]
    return match


def free_port() -> int:
    # The controller takes a fixed --port; the tiny window between close and its bind is acceptable here.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def simulation(tmp_path: Path) -> Iterator[dict[str, Any]]:
    workdir = tmp_path / "simulate"
    workdir.mkdir()
    with SimulateProcess(workdir) as simulate:
        yield simulate.info


def wait_until_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"controller exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        )
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_image_serves_its_probes_and_stops_cleanly_on_sigterm(
    image: tuple[Path, Path], overlay_objects: list[Obj], simulation: dict[str, Any], tmp_path: Path
) -> None:
    _, venv = image
    pod = one(overlay_objects, "Deployment")["spec"]["template"]["spec"]
    config = tmp_path / "config.yaml"
    config.write_text(one(overlay_objects, "ConfigMap")["data"]["config.yaml"])
    port, ops_port = free_port(), free_port()
    container = pod["containers"][0]
    # The container's own args, with the config path moved to this test's copy, the ops port to a free
    # one, and the fakes' endpoints.
    args = [
        str(config) if arg == "/etc/buildkite-controller/config.yaml" else arg for arg in container["args"]
    ]
    args[args.index("--ops-port") + 1] = str(ops_port)
    ports = {p["name"]: {"http": port, "ops": ops_port}[p["name"]] for p in container["ports"]}
    args += ["--kubeconfig", simulation["kubeconfig"], "--org", simulation["org"], "--host", "127.0.0.1"]
    args += ["--port", str(port), "--graphql-endpoint", simulation["graphql_endpoint"]]
    args += ["--agent-endpoint", simulation["agent_endpoint"]]
    env = image_environment(
        venv,
        {
            "POD_NAME": "buildkite-controller-0",
            "BUILDKITE_TOKEN": simulation["token"],
            "BUILDKITE_AGENT_TOKEN": simulation["agent_token"],
            "BUILDKITE_WEBHOOK_SECRET": "smoke-test-secret",
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
        },
    )
    log = tmp_path / "controller.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(venv / "bin" / "buildkite-controller"), *args],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=output,
        )
    url = f"http://127.0.0.1:{port}"
    probe_url = f"http://127.0.0.1:{ports[container['readinessProbe']['httpGet']['port']]}"
    live_url = f"http://127.0.0.1:{ports[container['livenessProbe']['httpGet']['port']]}"
    try:
        wait_until_ready(process, probe_url, log)
        assert httpx.get(f"{live_url}/healthz", timeout=5).status_code == 200
        unsigned = httpx.post(f"{url}/webhooks/buildkite", content=b"{}", timeout=5)
        assert 400 <= unsigned.status_code < 500
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=pod["terminationGracePeriodSeconds"])
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    # uvicorn re-raises the signal after its graceful shutdown, so "killed by SIGTERM" is a clean end too.
    assert status in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Application shutdown complete" in log.read_text()
