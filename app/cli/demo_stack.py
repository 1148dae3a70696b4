"""The demo's world: a fake Buildkite and a fake cluster in this process, the real controller beside them.

``DemoStack.start()`` serves both fakes on loopback (as ``simulate`` does), runs a simulated node, creates
the Secrets the example pods name, and starts ``buildkite-controller serve`` in a child process aimed at
the fakes (``controller_env``), with retentions and grace periods of seconds so a job's whole life fits
in a terminal session. From then on the fake Buildkite announces every job change to the controller as a
signed webhook, as Buildkite does, and ``SimulatedAgents`` play the ``buildkite-agent`` in each pod.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.simulate.agents import SimulatedAgents
from app.simulate.buildkite_server import FakeBuildkite
from app.simulate.kubelet import SimulatedKubelet
from app.simulate.kubelet_script import DEFAULT_RULES, ContainerScript, ImageRule
from app.simulate.process import controller_env, spawn, terminate
from app.simulate.stack import Simulation, SimulationOptions
from app.simulate.webhook_sender import WebhookSender

NAMESPACE = "buildkite"
QUEUE = "kubernetes"
# One kubelet step; a container runs RUN_TICKS of them, long enough for the demo's agent to take its job.
TICK_SECONDS = 0.2
RUN_TICKS = 8
# A container whose image matches this never finishes starting: its pod waits until the job is cancelled.
WAITS_FOREVER_IMAGE = "*huge-image*"
# Secrets the example pipeline's pods reference (gitEnvFrom); the simulation itself makes the agent token's.
SECRETS = ("git-ssh",)
# Short on purpose: "cleaned" should show up seconds after "finished". A real install keeps the defaults.
CONTROLLER_SETTINGS = {
    "succeeded-pod-retention": "2s",
    "failed-pod-retention": "3s",
    "image-pull-backoff-grace-period": "2s",
    "job-cancel-checker-poll-interval": "1s",
    "log-format": "text",
}
READY_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Endpoints:
    controller: str  # the controller's base URL (status page, webhooks, job trails)
    kube: str
    buildkite: str


class DemoStack:
    """Start with ``start()``, stop with ``stop()`` (or use it as a context manager)."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="buildkite-demo-"))
        self.webhook_secret = secrets.token_hex(16)
        self.simulation = Simulation(
            SimulationOptions(
                kubeconfig_out=str(self.workdir / "kubeconfig"),
                namespace=NAMESPACE,
                queue=QUEUE,
                kubelet=False,  # ours below: its containers run longer and one image waits forever
            )
        )
        self.kubelet: SimulatedKubelet | None = None
        self.agents: SimulatedAgents | None = None
        self.controller: subprocess.Popen[bytes] | None = None
        self.controller_log = self.workdir / "controller.log"
        self.http = httpx.Client(timeout=10)
        self.endpoints: Endpoints | None = None
        self._simulation_started = False

    def __enter__(self) -> DemoStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def buildkite(self) -> FakeBuildkite:
        return self.simulation.buildkite

    def start(self) -> Endpoints:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Endpoints:
        info = self.simulation.start()  # stops what it started if it fails
        self._simulation_started = True
        self.kubelet = SimulatedKubelet(
            info["kube_url"],
            namespace=NAMESPACE,
            tick_seconds=TICK_SECONDS,
            default_script=ContainerScript(run_ticks=RUN_TICKS),
            rules=(*DEFAULT_RULES, ImageRule(WAITS_FOREVER_IMAGE, ContainerScript(run_ticks=None))),
        )
        self.kubelet.start()
        # The agent in each running pod acquires, starts and finishes its job (Simulation starts these
        # only with its own kubelet).
        self.agents = SimulatedAgents(self.simulation.kube.store, self.buildkite.store)
        self.agents.start()
        for name in SECRETS:
            self._create_secret(info["kube_url"], name)
        port = _free_port()
        env = controller_env(info, webhook_secret=self.webhook_secret, port=str(port), **CONTROLLER_SETTINGS)
        self.controller = spawn(["serve"], log_path=self.controller_log, env=env)
        controller_url = f"http://127.0.0.1:{port}"
        self._wait_ready(controller_url)
        self.buildkite.sender = WebhookSender(
            f"{controller_url}/webhooks/buildkite",
            http=httpx.Client(timeout=10),
            secret=self.webhook_secret,
            org=self.buildkite.org,
        )
        self.endpoints = Endpoints(controller_url, info["kube_url"], info["buildkite_url"])
        return self.endpoints

    def stop(self) -> None:
        if self.controller is not None:
            terminate(self.controller)
            self.controller = None
        sender = self.buildkite.sender
        self.buildkite.sender = None
        if sender is not None and isinstance(sender.http, httpx.Client):
            sender.http.close()
        if self.agents is not None:
            self.agents.close()
            self.agents = None
        if self.kubelet is not None:
            self.kubelet.close()
            self.kubelet = None
        if self._simulation_started:
            self.simulation.stop()
            self._simulation_started = False
        self.http.close()

    # -- what the demo observes -----------------------------------------------------------------------

    def pods(self) -> dict[str, dict[str, Any]]:
        """The fake apiserver's pods by job UUID: ``{name, job_uuid, phase, deleting}``."""
        assert self.endpoints is not None
        response = self.http.get(f"{self.endpoints.kube}/_test/pods", params={"namespace": NAMESPACE})
        response.raise_for_status()
        return {pod["job_uuid"]: pod for pod in response.json()["pods"] if pod.get("job_uuid")}

    def job_record(self, uuid: str) -> dict[str, Any] | None:
        """The controller's record of the job (``GET /jobs/{uuid}``), None while it has none."""
        assert self.endpoints is not None
        response = self.http.get(
            f"{self.endpoints.controller}/jobs/{uuid}", headers={"Accept": "application/json"}
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def controller_exit_code(self) -> int | None:
        return self.controller.poll() if self.controller is not None else None

    # -- internals ------------------------------------------------------------------------------------

    def _create_secret(self, kube_url: str, name: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "stringData": {"token": "demo"},
        }
        response = self.http.post(f"{kube_url}/api/v1/namespaces/{NAMESPACE}/secrets", json=body)
        response.raise_for_status()

    def _wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.controller is not None and self.controller.poll() is not None:
                raise RuntimeError(
                    f"the controller exited with status {self.controller.returncode}; "
                    f"its log:\n{_tail(self.controller_log)}"
                )
            try:
                if self.http.get(f"{url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.1)
        raise RuntimeError(
            f"the controller was not ready within {READY_TIMEOUT_SECONDS:.0f} s; "
            f"its log:\n{_tail(self.controller_log)}"
        )


def _free_port() -> int:
    # The controller binds it a moment later; another process taking it in between is unlikely on
    # loopback, and then the controller's start fails with a clear "address in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
