"""`Simulation`: the fake cluster and the fake Buildkite started together, as `simulate` runs them.

Input: `SimulationOptions` (from the command's flags). Output: both fakes served on loopback, a kubeconfig
file aimed at the fake apiserver, optional demo jobs, and `info()` — everything a controller (or a test
in another process) needs to connect: URLs, tokens, organisation, queue, kubeconfig path.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.simulate import simulate_control
from app.simulate.agents import SimulatedAgents
from app.simulate.buildkite_server import FakeBuildkite
from app.simulate.buildkite_thread import LoopbackServer
from app.simulate.kube_api import FakeKubeAPI
from app.simulate.kubelet import SimulatedKubelet
from podspec.config import PodConfig

AGENT_TOKEN_SECRET = PodConfig().agent_token_secret


@dataclass(frozen=True)
class SimulationOptions:
    kube_port: int = 0
    buildkite_port: int = 0
    kubeconfig_out: str | None = None  # None: a file in a fresh temporary directory
    namespace: str = "buildkite"
    queue: str = "kubernetes"
    jobs: int = 0  # demo jobs created at start, in `queue`
    # Buildkite's real budget is 20,000 points per 5 minutes; load tests raise it to measure the controller.
    points_limit: int = 20_000
    # The simulated node runs pods to completion. Off for load tests: no agent acquires the jobs,
    # so finished pods would be cleaned up and their still-scheduled jobs picked up again.
    kubelet: bool = True
    kubelet_tick_seconds: float = 0.2


def kubeconfig_document(url: str, namespace: str) -> dict[str, Any]:
    """A kubeconfig with one context aimed at `url`; the fake accepts any bearer token."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "simulated", "cluster": {"server": url}}],
        "users": [{"name": "simulated", "user": {"token": "simulated-token"}}],
        "contexts": [
            {
                "name": "simulated",
                "context": {"cluster": "simulated", "user": "simulated", "namespace": namespace},
            }
        ],
        "current-context": "simulated",
    }


class Simulation:
    """Both fakes, started by `start()` and stopped by `stop()`; see the module docstring."""

    def __init__(self, options: SimulationOptions) -> None:
        self.options = options
        self.kube = FakeKubeAPI(port=options.kube_port)
        self.buildkite = FakeBuildkite(points_limit=options.points_limit)
        self._buildkite_server = LoopbackServer(
            self.buildkite.app, name="fake-buildkite", port=options.buildkite_port
        )
        self.kubeconfig = Path(options.kubeconfig_out or _temporary_kubeconfig())
        self.job_ids: list[str] = []
        self.kubelet: SimulatedKubelet | None = None
        self.agents: SimulatedAgents | None = None

    def start(self) -> dict[str, Any]:
        simulate_control.install(self.buildkite, self.kube)
        self.kube.start()
        try:
            # The fake's own start() binds any port; serving its app here honours --buildkite-port.
            self.buildkite.url = self._buildkite_server.start()
        except BaseException:
            self.kube.stop()
            raise
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_document(self.kube.url, self.options.namespace)))
        # What an installed cluster has: the Secret agent pods read their token from (podspec's default
        # name). Without it the simulated kubelet holds every agent container in CreateContainerConfigError.
        self.kube.create(
            "secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": AGENT_TOKEN_SECRET},
                "stringData": {"token": self.buildkite.agent_token},
            },
            namespace=self.options.namespace,
        )
        if self.options.kubelet:
            self.kubelet = SimulatedKubelet(
                self.kube.url,
                namespace=self.options.namespace,
                tick_seconds=self.options.kubelet_tick_seconds,
            )
            self.kubelet.start()
            # Running pods' agents acquire and finish their jobs, as the real agent does.
            self.agents = SimulatedAgents(self.kube.store, self.buildkite.store)
            self.agents.start()
        agents = {"queue": self.options.queue}
        self.job_ids = [self.buildkite.add_job(agents=agents) for _ in range(self.options.jobs)]
        return self.info()

    def info(self) -> dict[str, Any]:
        bk = self.buildkite
        return {
            "pid": os.getpid(),
            "kube_url": self.kube.url,
            "kubeconfig": str(self.kubeconfig),
            "namespace": self.options.namespace,
            "buildkite_url": bk.url,
            "graphql_endpoint": bk.graphql_url,
            "agent_endpoint": bk.agent_endpoint,
            "token": bk.api_token,
            "agent_token": bk.agent_token,
            "org": bk.org.slug,
            "queue": self.options.queue,
            "kubelet": self.kubelet.node_name if self.kubelet is not None else None,
            "job_ids": self.job_ids,
        }

    def stop(self) -> None:
        if self.agents is not None:
            self.agents.close()
        if self.kubelet is not None:
            self.kubelet.close()
        self._buildkite_server.stop()
        self.kube.stop()


def _temporary_kubeconfig() -> str:
    return str(Path(tempfile.mkdtemp(prefix="buildkite-simulate-")) / "kubeconfig")
