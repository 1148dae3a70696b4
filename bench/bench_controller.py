"""The controller's performance figures (issue 12), each beside its baseline measured in the same run.

Processes, as in production: the fakes (`buildkite-controller simulate`), one controller
(`buildkite-controller serve`), and this script. Every scenario gets a fresh pair of them, so no
scenario sees another's jobs or pods. All on loopback; every wait is bounded.

- latency     N jobs (200) sent at a steady rate (50/s), one webhook each: webhook sent → pod create
              answered (seen on a pod watch), p50/p99; the GraphQL round trip of the controller's own
              confirm request (replayed); and the latency beyond that round trip.
- latency_real_apiserver  the same, with the pods created in a real kube-apiserver and etcd (built by
              tests/realkube/build.sh; skipped, saying so, when they are not built): the fake apiserver's
              own create (strict schema validation in Python) is most of the figure above.
- burst       1,000 signed webhooks (sent by `curl --parallel`, 32 at a time) → all pods, client-side
              QPS cap lifted; in the same fake, the official `kubernetes` client creating the same
              manifests from 16 threads (the apiserver's capacity). CPU seconds of the controller per job
              beside the raw client's per create.
- default     the same burst with every setting at its default.
- slow_graphql the same burst with 100 ms added to every GraphQL answer: confirm requests per 1,000 jobs,
              and the Buildkite complexity points per job (the recorded requests replayed with stats).
- lifecycle   jobs run to completion by the simulated kubelet (retention 0): Kubernetes requests by
              verb, writes per job lifecycle.
- RSS of the controller after the burst; `--rss-jobs 10000` adds a burst of that many jobs (RSS while
  tracking 10,000 pods).

    python bench/bench_controller.py [--jobs 1000] [--rss-jobs 10000] [--only burst,latency]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import kubernetes.client
import kubernetes.config

from app.simulate.process import SimulateProcess, controller_env, spawn, terminate
from app.simulate.webhook_sender import sign

SECRET = "bench-webhook-secret"
BASELINE_NAMESPACE = "bench-baseline"
BASELINE_THREADS = 16
CONFIRM = "ConfirmJobs"  # the GraphQL operation that confirms webhook-announced jobs
JOB_UUID_LABEL = "buildkite.com/job-uuid"
# Server-set fields a client never sends; stripped so the baseline posts what the controller posted.
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
READ_VERBS = ("get", "list", "watch")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LIFTED = {"k8s_client_rate_limiter_qps": "5000", "k8s_client_rate_limiter_burst": "5000"}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def summary(seconds: list[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds."""
    return {
        "p50_ms": round(percentile(seconds, 0.5) * 1000, 1),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


# --- the processes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeTarget:
    """The Kubernetes API the controller creates pods in, and how the bench's pod watch reaches it."""

    kubeconfig: str
    namespace: str
    url: str
    token: str | None = None
    ca_file: str | None = None

    @classmethod
    def of(cls, sim: SimulateProcess) -> KubeTarget:
        return cls(sim.info["kubeconfig"], sim.info["namespace"], sim.info["kube_url"])


@contextmanager
def real_apiserver(workdir: Path) -> Iterator[KubeTarget]:
    """etcd + kube-apiserver built from their Go modules (tests/realkube/build.sh), admin credentials.
    Raises ``ControlPlaneError`` when the binaries are not built."""
    from tests.realkube.controlplane import ControlPlane, ControlPlaneError, binaries_dir, missing_binaries

    directory = binaries_dir()
    missing = missing_binaries(directory)
    if missing:
        raise ControlPlaneError(f"{', '.join(missing)} not built: bash tests/realkube/build.sh")
    with ControlPlane(directory, workdir / "realkube") as plane:
        plane.create_namespace("bench")
        assert plane.admin is not None
        yield KubeTarget(
            str(plane.admin.kubeconfig), "bench", plane.url, plane.admin.token, str(plane.ca_file)
        )


class Controller:
    """A `serve` process aimed at `sim` (and at `kube`, when given, for pods), ready (leader, first
    sweep over) when constructed."""

    def __init__(
        self,
        sim: SimulateProcess,
        workdir: Path,
        name: str,
        settings: dict[str, str],
        kube: KubeTarget | None = None,
    ) -> None:
        port = free_port()
        if kube is not None:
            settings = {"kubeconfig": kube.kubeconfig, "namespace": kube.namespace} | settings
        env = controller_env(
            sim.info,
            webhook_secret=SECRET,
            port=str(port),
            log_level="warning",
            # Only the webhook path is measured: no periodic sweep may pick the jobs up meanwhile.
            reconcile_interval="1h",
            **settings,
        ) | {"POD_NAME": f"bench-{name}"}
        self.process = spawn(["serve"], log_path=workdir / f"controller-{name}.log", env=env)
        self.url = f"http://127.0.0.1:{port}"
        wait_for(self._ready, timeout=60, what="the controller's /readyz")
        wait_for(lambda: self.metric("is_leader") == 1, timeout=60, what="the Lease")
        wait_for(lambda: self.metric('sweeps_total{trigger="timer"}') >= 1, timeout=60, what="a sweep")
        # A POST /reconcile queues behind a sweep in progress, so its answer means none is running.
        httpx.post(self.url + "/reconcile", timeout=60).raise_for_status()

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, sample: str) -> float:
        prefix = "buildkite_controller_" + sample + " "
        for line in httpx.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        terminate(self.process)


@contextmanager
def stack(
    workdir: Path,
    name: str,
    settings: dict[str, str],
    *,
    kubelet: bool = False,
    kube: KubeTarget | None = None,
) -> Iterator[tuple[SimulateProcess, Controller]]:
    simdir = workdir / name
    simdir.mkdir()
    args = ["--points-limit", "100000000", *([] if kubelet else ["--no-kubelet"])]
    if not kubelet:
        # No kubelet: pods never finish, so an in-flight limit (the only non-default setting of the
        # "default" scenario) would stop every burst at its first few pods.
        settings = {"max_in_flight": "0"} | settings
    with SimulateProcess(simdir, extra_args=args) as sim:
        controller = Controller(sim, simdir, name, settings, kube)
        try:
            yield sim, controller
        finally:
            controller.stop()


def headers_for(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Buildkite-Event": "job.scheduled",
        "X-Buildkite-Signature": sign(SECRET, int(time.time()), body),
    }


def curl_config(url: str, bodies: list[bytes], directory: Path) -> Path:
    """A curl config sending each body once, signed now (well inside the 5-minute window)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for index, body in enumerate(bodies):
        path = directory / f"webhook-{index}.json"
        path.write_bytes(body)
        lines += [
            f'url = "{url}"',
            f'data-binary = "@{path}"',
            'output = "/dev/null"',
            'write-out = "%{http_code}\\n"',
        ]
        lines += [f'header = "{name}: {value}"' for name, value in headers_for(body).items()]
        lines.append("next")
    config = directory / "burst.curl"
    config.write_text("\n".join(lines[:-1]) + "\n")
    return config


def send_burst(config: Path, concurrency: int) -> Counter[str]:
    """Every webhook of ``config``, ``concurrency`` at a time over kept-alive connections, by curl: a
    Python sender on these two shared cores delivered ~180 webhooks/s, slower than the controller
    creates pods, so the "burst" was a trickle and measured the sender. Statuses by count."""
    done = subprocess.run(
        [
            *("curl", "--silent", "--parallel", "--parallel-immediate"),
            *("--parallel-max", str(concurrency), "--config", str(config)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    statuses = Counter(done.stdout.split())
    if done.returncode != 0 and not statuses:
        raise SystemExit(f"bench: curl failed ({done.returncode}): {done.stderr[:500]}")
    return statuses


def graphql_calls(sim: SimulateProcess, since: int = 0) -> list[dict[str, Any]]:
    calls = sim.buildkite("GET", "/_test/calls").json()[since:]
    return [call for call in calls if call["path"] == "/v1"]


def operation(body: str) -> str:
    """The GraphQL operation name of a recorded request body ("?" when it has none)."""
    try:
        request = json.loads(body)
    except ValueError:
        return "?"
    name = request.get("operationName") if isinstance(request, dict) else None
    if name:
        return str(name)
    query = str(request.get("query", "")) if isinstance(request, dict) else ""
    words = query.replace("(", " ").replace("{", " ").split()
    return words[1] if len(words) > 1 and words[0] in {"query", "mutation"} else "?"


def replay(sim: SimulateProcess, bodies: list[str]) -> tuple[list[float], int]:
    """Send recorded GraphQL queries again with query stats: (round trips in s, actual points in all)."""
    headers = {
        "Authorization": f"Bearer {sim.info['token']}",
        "Content-Type": "application/json",
        "Buildkite-Include-Query-Stats": "true",
    }
    seconds: list[float] = []
    points = 0
    for body in bodies:
        started = time.monotonic()
        response = sim.buildkite("POST", "/v1", content=body.encode(), headers=headers)
        seconds.append(time.monotonic() - started)
        response.raise_for_status()
        points += int(response.json().get("stats", {}).get("actualComplexity", 0))
    return seconds, points


class PodWatch:
    """A watch on the jobs namespace in a thread: when each job's pod was first seen (monotonic)."""

    def __init__(self, kube: KubeTarget) -> None:
        self.seen: dict[str, float] = {}
        self._kube = kube
        self._url = f"{kube.url}/api/v1/namespaces/{kube.namespace}/pods"
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._opened.wait(10):
            raise SystemExit("bench: the pod watch did not open")

    def _run(self) -> None:
        try:
            self._follow()
        except httpx.HTTPError:
            if not self._stop.is_set():  # the server going away after close() is expected
                raise

    def _follow(self) -> None:
        params = {"watch": "1", "resourceVersion": "0"}
        headers = {"Authorization": f"Bearer {self._kube.token}"} if self._kube.token else {}
        with (
            httpx.Client(
                timeout=httpx.Timeout(5, read=None), headers=headers, verify=self._kube.ca_file or True
            ) as http,
            http.stream("GET", self._url, params=params) as response,
        ):
            self._opened.set()
            for line in response.iter_lines():
                now = time.monotonic()
                if self._stop.is_set():
                    return
                event = json.loads(line)
                labels = (event.get("object", {}).get("metadata") or {}).get("labels") or {}
                uuid = labels.get(JOB_UUID_LABEL)
                if event.get("type") == "ADDED" and uuid:
                    self.seen.setdefault(uuid, now)

    def close(self) -> None:
        self._stop.set()


# --- the scenarios --------------------------------------------------------------------------------


def scenario_latency_real_apiserver(workdir: Path, jobs: int, rate: float) -> dict[str, Any]:
    """The latency scenario with pods created in a real kube-apiserver (no kubelet: created is enough)."""
    from tests.realkube.controlplane import ControlPlaneError

    try:
        with real_apiserver(workdir) as kube:
            return scenario_latency(workdir, jobs, rate, kube=kube)
    except ControlPlaneError as exc:
        return {"skipped": str(exc)}


def scenario_latency(
    workdir: Path, jobs: int, rate: float, *, kube: KubeTarget | None = None
) -> dict[str, Any]:
    name = "latency" if kube is None else "latency-real-apiserver"
    with stack(workdir, name, LIFTED, kube=kube) as (sim, controller):
        ids = sim.add_jobs(jobs)
        bodies = sim.webhook_bodies(ids)
        watch = PodWatch(kube or KubeTarget.of(sim))
        sent: dict[str, float] = {}
        before = len(sim.buildkite("GET", "/_test/calls").json())
        cpu_before = controller.cpu()

        async def paced() -> None:
            url = controller.url + "/webhooks/buildkite"
            async with httpx.AsyncClient(timeout=30) as http:
                start = time.monotonic()
                tasks = []
                for index, (uuid, body) in enumerate(zip(ids, bodies, strict=True)):
                    await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
                    sent[uuid] = time.monotonic()
                    tasks.append(asyncio.create_task(http.post(url, content=body, headers=headers_for(body))))
                for response in await asyncio.gather(*tasks):
                    response.raise_for_status()

        asyncio.run(paced())
        try:
            wait_for(lambda: len(watch.seen) >= jobs, timeout=60, what="every pod on the watch")
        except SystemExit:
            creates = sim.request_count("create", "pods")
            raise SystemExit(f"bench: {len(watch.seen)} pods seen on the watch, {creates} creates") from None
        watch.close()
        cpu = controller.cpu() - cpu_before
        stages = stage_offsets(controller, ids)
        confirms = [call["body"] for call in graphql_calls(sim, before) if operation(call["body"]) == CONFIRM]
        rtts, points = replay(sim, confirms[:50])
        # Every job is in exactly one confirm; the replayed ones name this many.
        replayed_jobs = sum(len(set(UUID.findall(body))) for body in confirms[:50])
    latencies = [watch.seen[uuid] - sent[uuid] for uuid in ids]
    rtt = percentile(rtts, 0.5)
    return {
        "jobs": jobs,
        "rate_per_second": rate,
        "webhook_to_pod_created": summary(latencies),
        "graphql_rtt": summary(rtts),
        "beyond_graphql_rtt": summary([max(0.0, value - rtt) for value in latencies]),
        "confirm_requests": len(confirms),
        "complexity_points_per_job": round(points / max(1, replayed_jobs), 2),
        "controller_cpu_seconds": round(cpu, 2),
        # From each job's trail in the controller (GET /jobs/{uuid}): where the time goes.
        "webhook_received_to": stages,
    }


# A job's trail steps, in the order a webhook job passes them (app.jobs: ``Step.what``).
TRAIL_MARKS = {
    "confirm sent": ("confirm",),
    "confirmed": ("confirmed",),
    "create sent": ("create",),
    "create answered": ("created", "exists"),
}


def stage_offsets(controller: Controller, ids: list[str]) -> dict[str, dict[str, float]]:
    """Seconds from the webhook's arrival to each mark of the job's trail, p50/p99 over ``ids``; and
    from arrival to the create's answer less the job's own confirm round trip, both ends measured
    in the controller (issue 12's "beyond the GraphQL round trip")."""
    offsets: dict[str, list[float]] = {mark: [] for mark in TRAIL_MARKS}
    beyond: list[float] = []
    own: list[float] = []
    with httpx.Client(base_url=controller.url, timeout=10, headers={"Accept": "application/json"}) as http:
        for uuid in ids:
            record = http.get(f"/jobs/{uuid}").raise_for_status().json()
            marks: dict[str, float] = {}
            for mark, names in TRAIL_MARKS.items():
                found = next((step["at"] for step in record["trail"] if step["what"] in names), None)
                if found is not None:
                    marks[mark] = found - record["first_seen"]
                    offsets[mark].append(marks[mark])
            if len(marks) == len(TRAIL_MARKS):
                beyond.append(marks["create answered"] - (marks["confirmed"] - marks["confirm sent"]))
                own.append(marks["confirm sent"] + marks["create sent"] - marks["confirmed"])
    result = {mark: summary(values) for mark, values in offsets.items() if values}
    if beyond:
        result["create answered, less its own confirm round trip"] = summary(beyond)
        # What is left once both round trips (Buildkite's confirm, the apiserver's create) are taken out.
        result["the controller's own time (received → confirm sent, confirmed → create sent)"] = summary(own)
    return result


def run_burst(sim: SimulateProcess, controller: Controller, jobs: int, concurrency: int) -> dict[str, Any]:
    ids = sim.add_jobs(jobs)
    config = curl_config(
        controller.url + "/webhooks/buildkite", sim.webhook_bodies(ids), sim.workdir / "burst"
    )
    before = len(sim.buildkite("GET", "/_test/calls").json())
    creates_before = sim.request_count("create", "pods")
    cpu_before = controller.cpu()
    sim_cpu_before = cpu_seconds(sim.process.pid) if sim.process else 0.0
    started = time.monotonic()
    statuses = send_burst(config, concurrency)
    wait_for(lambda: sim.request_count("create", "pods") - creates_before >= jobs, timeout=900, what="pods")
    seconds = time.monotonic() - started
    cpu = controller.cpu() - cpu_before
    sim_cpu = (cpu_seconds(sim.process.pid) if sim.process else 0.0) - sim_cpu_before
    calls = graphql_calls(sim, before)
    operations = Counter(operation(call["body"]) for call in calls)
    return {
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "pods_per_second": round(jobs / seconds, 1),
        "controller_cpu_seconds": round(cpu, 2),
        "controller_cpu_ms_per_job": round(cpu * 1000 / jobs, 3),
        "fakes_cpu_seconds": round(sim_cpu, 2),
        "graphql_requests_per_1000_jobs": round(len(calls) * 1000 / jobs, 1),
        "graphql_requests_by_operation": dict(operations),
        "webhook_statuses": dict(statuses),
        "throttled_seconds": controller.metric("kube_client_throttled_seconds"),
        "rss_mib": rss_mib(controller.process.pid),
        "_calls": calls,
    }


def raw_client_baseline(sim: SimulateProcess) -> dict[str, Any]:
    """The controller's own pod manifests created again from 16 threads with the official client."""
    listed = sim.kube("GET", f"/api/v1/namespaces/{sim.info['namespace']}/pods").json()["items"]
    manifests = [as_sent(pod) for pod in listed]
    client = kubernetes.config.new_client_from_config(config_file=sim.info["kubeconfig"])
    client.configuration.connection_pool_maxsize = BASELINE_THREADS
    client.rest_client.pool_manager.connection_pool_kw["maxsize"] = BASELINE_THREADS
    cpu_before = own_cpu_seconds()
    sim_cpu_before = cpu_seconds(sim.process.pid) if sim.process else 0.0
    with client, ThreadPoolExecutor(BASELINE_THREADS) as pool:
        core = kubernetes.client.CoreV1Api(client)
        started = time.monotonic()
        list(pool.map(lambda body: core.create_namespaced_pod(BASELINE_NAMESPACE, body), manifests))
        seconds = time.monotonic() - started
    cpu = own_cpu_seconds() - cpu_before
    sim_cpu = (cpu_seconds(sim.process.pid) if sim.process else 0.0) - sim_cpu_before
    return {
        "pods": len(manifests),
        "threads": BASELINE_THREADS,
        "seconds": round(seconds, 3),
        "pods_per_second": round(len(manifests) / seconds, 1),
        "client_cpu_ms_per_create": round(cpu * 1000 / len(manifests), 3),
        "fakes_cpu_seconds": round(sim_cpu, 2),
    }


def as_sent(pod: dict[str, Any]) -> dict[str, Any]:
    metadata = {key: value for key, value in pod["metadata"].items() if key not in SERVER_FIELDS}
    return {
        **{k: v for k, v in pod.items() if k != "status"},
        "metadata": metadata | {"namespace": BASELINE_NAMESPACE},
    }


def scenario_burst(workdir: Path, jobs: int, concurrency: int) -> dict[str, Any]:
    with stack(workdir, "burst", LIFTED) as (sim, controller):
        burst = run_burst(sim, controller, jobs, concurrency)
        burst.pop("_calls")
        baseline = raw_client_baseline(sim)
    return {
        "controller": burst,
        "raw_client_16_threads": baseline,
        "ratio": round(burst["pods_per_second"] / baseline["pods_per_second"], 3),
    }


def scenario_default(workdir: Path, jobs: int, concurrency: int) -> dict[str, Any]:
    with stack(workdir, "default", {}) as (sim, controller):
        burst = run_burst(sim, controller, jobs, concurrency)
        burst.pop("_calls")
    return burst


def scenario_slow_graphql(workdir: Path, jobs: int, concurrency: int, delay: float) -> dict[str, Any]:
    with stack(workdir, "slowgraphql", LIFTED) as (sim, controller):
        fault = {"surface": "graphql", "latency_seconds": delay, "count": None}
        sim.buildkite("POST", "/_test/faults", json=fault).raise_for_status()
        burst = run_burst(sim, controller, jobs, concurrency)
        sim.buildkite("DELETE", "/_test/faults").raise_for_status()
        # The controller's side: webhook batches confirmed, stale confirmations re-checked, batch sizes.
        controller_calls = {
            "confirm": controller.metric('graphql_calls_total{operation="confirm"}'),
            "recheck": controller.metric('graphql_calls_total{operation="recheck"}'),
            "jobs_per_confirm": round(
                controller.metric("confirm_batch_size_sum")
                / max(1.0, controller.metric("confirm_batch_size_count")),
                1,
            ),
        }
        calls = [call for call in burst.pop("_calls") if operation(call["body"]) == CONFIRM]
        confirms = len(calls)
        _, points = replay(sim, [call["body"] for call in calls])
    return {
        "added_graphql_latency_ms": delay * 1000,
        "confirm_requests_per_1000_jobs": round(confirms * 1000 / jobs, 1),
        "complexity_points_per_job": round(points / jobs, 2),
        "controller_graphql_calls": controller_calls,
        "burst": burst,
    }


def scenario_lifecycle(workdir: Path, jobs: int) -> dict[str, Any]:
    settings = LIFTED | {"succeeded_pod_retention": "0", "failed_pod_retention": "0"}
    with stack(workdir, "lifecycle", settings, kubelet=True) as (sim, controller):
        verbs = READ_VERBS + WRITE_VERBS
        before = {verb: sim.request_count(verb, "pods") for verb in verbs}
        all_before = sim.request_count()
        ids = sim.add_jobs(jobs)
        config = curl_config(
            controller.url + "/webhooks/buildkite", sim.webhook_bodies(ids), sim.workdir / "burst"
        )
        statuses = send_burst(config, 8)
        wait_for(
            lambda: sim.request_count("delete", "pods") - before["delete"] >= jobs,
            timeout=300,
            what="every pod deleted",
            every=0.5,
        )
        states = Counter(job["state"] for job in sim.jobs() if job["id"] in set(ids))
        by_verb = {verb: sim.request_count(verb, "pods") - before[verb] for verb in verbs}
        everything = sim.request_count() - all_before
    writes = sum(by_verb[verb] for verb in WRITE_VERBS)
    return {
        "jobs": jobs,
        "job_states": dict(states),
        "webhook_statuses": dict(statuses),
        "pod_requests_by_verb": by_verb,
        "kube_requests_all_resources": everything,
        "writes_per_job": round(writes / jobs, 2),
    }


def scenario_rss(workdir: Path, jobs: int, concurrency: int) -> dict[str, Any]:
    with stack(workdir, "rss", LIFTED) as (sim, controller):
        idle = rss_mib(controller.process.pid)
        burst = run_burst(sim, controller, jobs, concurrency)
        burst.pop("_calls")
        wait_for(lambda: controller.metric('pods{phase="Pending"}') >= jobs, timeout=120, what="tracked pods")
        tracked = rss_mib(controller.process.pid)
    return {"pods_tracked": jobs, "rss_mib_idle": idle, "rss_mib_tracking": tracked, "burst": burst}


SCENARIOS = ("latency", "latency_real_apiserver", "burst", "default", "slow_graphql", "lifecycle", "rss")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per burst")
    parser.add_argument("--concurrency", type=int, default=32, help="webhooks in flight at once")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--latency-rate", type=float, default=50.0, help="webhooks per second")
    parser.add_argument("--graphql-delay", type=float, default=0.1, help="seconds added to GraphQL answers")
    parser.add_argument("--lifecycle-jobs", type=int, default=100)
    parser.add_argument("--rss-jobs", type=int, default=10_000, help="pods tracked for the RSS figure")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated of {SCENARIOS}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    result: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_1m_start": round(os.getloadavg()[0], 2)}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-controller-") as tmp:
        workdir = Path(tmp)
        runs: dict[str, Callable[[], dict[str, Any]]] = {
            "latency": lambda: scenario_latency(workdir, args.latency_jobs, args.latency_rate),
            "latency_real_apiserver": lambda: scenario_latency_real_apiserver(
                workdir, args.latency_jobs, args.latency_rate
            ),
            "burst": lambda: scenario_burst(workdir, args.jobs, args.concurrency),
            "default": lambda: scenario_default(workdir, args.jobs, args.concurrency),
            "slow_graphql": lambda: scenario_slow_graphql(
                workdir, args.jobs, args.concurrency, args.graphql_delay
            ),
            "lifecycle": lambda: scenario_lifecycle(workdir, args.lifecycle_jobs),
            "rss": lambda: scenario_rss(workdir, args.rss_jobs, args.concurrency),
        }
        for name in chosen:
            result[name] = runs[name]()
            print(f"bench: {name} done", file=sys.stderr, flush=True)
    result["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
