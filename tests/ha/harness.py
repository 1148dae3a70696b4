"""Multi-process harness: ONE `simulate` process and N `buildkite-controller serve` processes.

Each replica is a real child process with its own port and POD_NAME (its Lease identity), configured
through environment variables exactly as a Deployment would configure it, with a short Lease so a
failover fits in a test. Webhooks are signed like Buildkite's and sent from this process by a
`Burst` in a background thread, so a test can kill or restart replicas while the burst is running.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.config import OPTIONS_BY_KEY
from app.simulate.process import SimulateProcess, controller_env, spawn, terminate
from app.simulate.webhook_sender import sign
from tests.support import wait_until

WEBHOOK_SECRET = "ha-test-webhook-secret"
LEASE_NAME = "buildkite-controller-leader"
# Short enough for a failover test, long enough that a leader on two busy shared cores keeps leading:
# with 3 s and client-go's 2/3 renew deadline (2 s) one slow election round made it step down and back,
# and every comeback triggers a takeover sweep.
LEASE_SECONDS = 5.0
RENEW_SECONDS = 1.0
RENEW_DEADLINE_SECONDS = 4.0
RECONCILE_SECONDS = 60.0


def free_port() -> int:
    """A port free right now; the replica binds it moments later (and again after a restart)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Replica:
    """One controller process; `start`, `terminate` (SIGTERM), `kill` (SIGKILL), `restart`."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "POD_NAME": name, _env("port"): str(self.port)}
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_codes: list[int] = []

    def start(self) -> None:
        self.process = spawn(["serve"], log_path=self.log_path, env=self.env)

    def is_ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"{self.name} is not running; log:\n{self.log_tail()}")
        try:
            return httpx.get(self.url + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        wait_until(self.is_ready, timeout=timeout, what=f"{self.name} /readyz", every=0.05)

    def terminate(self) -> int:
        assert self.process is not None
        code = terminate(self.process, timeout=30)  # the pod's terminationGracePeriodSeconds
        self.exit_codes.append(code)
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.exit_codes.append(self.process.wait(10))

    def restart(self, *, ready_timeout: float = 90.0) -> None:
        self.start()
        self.wait_ready(ready_timeout)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _env(key: str) -> str:
    return OPTIONS_BY_KEY[key].env_name


def replica_env(info: dict[str, Any], **overrides: str) -> dict[str, str]:
    """The settings every replica shares, as environment variables named by `app.config.OPTIONS`;
    ``overrides`` (config keys with ``_``) win."""
    settings = {
        "max_in_flight": "0",  # without a kubelet no pod would ever free a slot
        "lease_duration": f"{LEASE_SECONDS}s",
        "leader_renew_interval": f"{RENEW_SECONDS}s",
        "leader_renew_deadline": f"{RENEW_DEADLINE_SECONDS}s",
        "reconcile_interval": f"{RECONCILE_SECONDS}s",
        # The fake apiserver is local; client-side throttling would only measure the limiter.
        "k8s_client_rate_limiter_qps": "2000",
        "k8s_client_rate_limiter_burst": "2000",
        "log_level": "warning",  # one INFO line per transition x 2,000 jobs x 3 replicas costs CPU
        **overrides,
    }
    return controller_env(info, webhook_secret=WEBHOOK_SECRET, **settings)


class Cluster:
    """The simulate process plus the replicas; read the Lease, pods and jobs over HTTP."""

    def __init__(self, sim: SimulateProcess, replicas: list[Replica]) -> None:
        self.sim = sim
        self.replicas = replicas
        self.by_name = {replica.name: replica for replica in replicas}

    def leader_name(self) -> str | None:
        namespace = self.sim.info["namespace"]
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{LEASE_NAME}"
        response = self.sim.kube("GET", path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return (response.json().get("spec") or {}).get("holderIdentity") or None

    def leader(self, timeout: float = 10.0) -> Replica:
        name = wait_until(
            lambda: (n := self.leader_name()) in self.by_name and n, timeout=timeout, what="a leader"
        )
        return self.by_name[name]

    def pods_by_job(self) -> Counter[str]:
        return Counter(pod["job_uuid"] for pod in self.sim.pods() if pod["job_uuid"])

    def wait_for_pods(self, ids: Sequence[str], *, timeout: float) -> Counter[str]:
        wanted = set(ids)

        def all_have_pods() -> Counter[str] | None:
            counts = self.pods_by_job()
            return counts if wanted <= set(counts) else None

        return wait_until(all_have_pods, timeout=timeout, what=f"pods for {len(ids)} jobs", every=0.25)

    def reconcile(self, replica: Replica) -> httpx.Response:
        return httpx.post(replica.url + "/reconcile", timeout=60)


@contextmanager
def running_cluster(
    workdir: Path,
    replicas: int,
    *,
    ready_timeout: float = 90.0,
    kubelet: bool = False,
    **settings: str,
) -> Iterator[Cluster]:
    """Start `simulate` (by default `--no-kubelet`: pods stay Pending) and `replicas` controllers with
    `settings` (config keys with `_`); stop them all (SIGTERM) at the end."""
    args = ["--points-limit", "10000000", *([] if kubelet else ["--no-kubelet"])]
    sim = SimulateProcess(workdir, extra_args=args)
    sim.start()
    started: list[Replica] = []
    try:
        env = replica_env(sim.info, **settings)
        started = [Replica(f"replica-{index}", env, workdir) for index in range(replicas)]
        for replica in started:
            replica.start()
        for replica in started:
            replica.wait_ready(ready_timeout)
        yield Cluster(sim, started)
    finally:
        for replica in started:
            if replica.process is not None and replica.process.poll() is None:
                replica.terminate()
        sim.stop()


class Burst:
    """Signed `job.scheduled` webhooks, each sent `copies` times to a random replica, in a thread.

    `progress` counts deliveries attempted so far; `statuses` counts the answers (`"error"` for a
    connection that failed, as when the replica was just killed: Buildkite gives up on those too).
    """

    def __init__(
        self,
        urls: Sequence[str],
        bodies: Sequence[bytes],
        *,
        copies: int = 3,
        seed: int = 0,
        concurrency: int = 32,
    ) -> None:
        rng = random.Random(seed)
        self.plan = [(rng.choice(urls), body) for body in bodies for _ in range(copies)]
        rng.shuffle(self.plan)
        self.concurrency = concurrency
        self.progress = 0
        self.statuses: Counter[str] = Counter()
        self.seconds = 0.0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="burst", daemon=True)

    def start(self) -> Burst:
        self._thread.start()
        return self

    def join(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the burst did not finish within {timeout} s ({self.progress} sent)")

    def wait_progress(self, fraction: float, timeout: float = 60.0) -> None:
        target = int(len(self.plan) * fraction)
        wait_until(lambda: self.progress >= target, timeout=timeout, what=f"{target} deliveries")

    async def _run(self) -> None:
        started = time.monotonic()
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        for item in self.plan:
            queue.put_nowait(item)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            await asyncio.gather(*(self._worker(http, queue) for _ in range(self.concurrency)))
        self.seconds = time.monotonic() - started

    async def _worker(self, http: httpx.AsyncClient, queue: asyncio.Queue[tuple[str, bytes]]) -> None:
        while not queue.empty():
            url, body = queue.get_nowait()
            headers = {
                "Content-Type": "application/json",
                "X-Buildkite-Event": "job.scheduled",
                "X-Buildkite-Signature": sign(WEBHOOK_SECRET, int(time.time()), body),
            }
            try:
                response = await http.post(url + "/webhooks/buildkite", content=body, headers=headers)
                self.statuses[str(response.status_code)] += 1
            except httpx.HTTPError:
                self.statuses["error"] += 1
            self.progress += 1
