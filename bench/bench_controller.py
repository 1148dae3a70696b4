"""End-to-end throughput of the controller: signed webhooks in, pods out, beside a raw-create baseline.

Three processes, as in production: the fakes (`buildkite-controller simulate --no-kubelet`), one
controller (`buildkite-controller serve`), and this script, which creates N jobs in the fake Buildkite,
sends their `job.scheduled` webhooks (signed, once each, `--concurrency` at a time) and waits until
every job has its pod. Then, in the same run and against the same fake apiserver, the baseline: a
tight sequential loop of raw creates of the very same pod manifests with the official `kubernetes`
client. The fake apiserver's cost per create is the same in both, so `ratio` is comparable across
machines; it answers "how much does everything the controller does cost, relative to just creating".

    python bench/bench_controller.py [--jobs 2000] [--concurrency 32]     # prints one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import kubernetes.client
import kubernetes.config

from app.simulate.process import SimulateProcess, controller_env, spawn, terminate
from app.simulate.webhook_sender import sign

SECRET = "bench-webhook-secret"
# Sequential jobs after the burst, for the latency of one job on an otherwise idle controller.
LATENCY_SAMPLES = 50
BASELINE_NAMESPACE = "bench-baseline"
# Server-set fields a client never sends; stripped so the baseline posts what the controller posted.
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_controller_env(info: dict[str, Any], port: int) -> dict[str, str]:
    env = controller_env(
        info,
        webhook_secret=SECRET,
        port=str(port),
        max_in_flight="0",  # no kubelet: pods never finish, so a limit would stop the burst
        k8s_client_rate_limiter_qps="5000",  # measure the controller, not its client-side throttle
        k8s_client_rate_limiter_burst="5000",
        log_level="warning",
        # Only the webhook path is measured: no periodic sweep may pick the jobs up during the burst.
        reconcile_interval="1h",
    )
    return env | {"POD_NAME": "bench-controller"}


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Any, *, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout} s waiting for {what}")
        time.sleep(every)


async def send_webhooks(url: str, bodies: list[bytes], concurrency: int) -> Counter[str]:
    statuses: Counter[str] = Counter()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            headers = {
                "Content-Type": "application/json",
                "X-Buildkite-Event": "job.scheduled",
                "X-Buildkite-Signature": sign(SECRET, int(time.time()), body),
            }
            response = await http.post(url, content=body, headers=headers)
            statuses[str(response.status_code)] += 1

    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return statuses


def run_controller(sim: SimulateProcess, jobs: int, concurrency: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    process = spawn(["serve"], log_path=workdir / "controller.log", env=bench_controller_env(sim.info, port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), timeout=60, what="the controller's /readyz")
        # The leader's first sweep (then none for an hour) must be over before any job exists; a
        # POST /reconcile queues behind a sweep in progress, so its answer means none is running.
        wait_for(lambda: _metric(url, "is_leader") == 1, timeout=60, what="the Lease")
        wait_for(lambda: _metric(url, 'sweeps_total{trigger="timer"}') >= 1, timeout=60, what="a sweep")
        httpx.post(url + "/reconcile", timeout=60).raise_for_status()
        ids = sim.add_jobs(jobs)
        bodies = sim.webhook_bodies(ids)
        graphql_before = len(sim.buildkite("GET", "/_test/calls").json())
        cpu_before = cpu_seconds(process.pid)
        started = time.monotonic()
        statuses = asyncio.run(send_webhooks(url + "/webhooks/buildkite", bodies, concurrency))
        wait_for(lambda: sim.request_count("create", "pods") >= jobs, timeout=600, what="every pod")
        seconds = time.monotonic() - started
        cpu = cpu_seconds(process.pid) - cpu_before
        latency = single_job_latency(sim, url, samples=LATENCY_SAMPLES)
        rss_mib = rss_bytes(process.pid) / 2**20
    finally:
        terminate(process)
    calls = sim.buildkite("GET", "/_test/calls").json()[graphql_before:]
    operations = Counter(_operation(call["body"]) for call in calls if call["path"] == "/v1")
    graphql = sum(operations.values())
    pods = {pod["job_uuid"] for pod in sim.pods()}
    if not set(ids) <= pods:
        raise SystemExit(f"bench: {len(set(ids) - pods)} jobs have no pod; see {workdir}/controller.log")
    return {
        "seconds": round(seconds, 3),
        "pods_per_second": round(jobs / seconds, 1),
        "cpu_seconds_per_job": round(cpu / jobs, 5),
        "graphql_requests": graphql,
        "graphql_requests_per_1000_jobs": round(graphql * 1000 / jobs, 1),
        "graphql_requests_by_operation": dict(operations),
        "webhook_statuses": dict(statuses),
        "single_job_webhook_to_pod_seconds": latency,
        "rss_mib_after_burst": round(rss_mib, 1),
    }


def single_job_latency(sim: SimulateProcess, url: str, *, samples: int) -> dict[str, float]:
    """One job at a time on an idle controller: webhook sent → its pod exists in the apiserver."""
    ids = sim.add_jobs(samples)
    bodies = sim.webhook_bodies(ids)
    namespace = sim.info["namespace"]
    seconds = []
    for uuid, body in zip(ids, bodies, strict=True):
        started = time.monotonic()
        asyncio.run(send_webhooks(url + "/webhooks/buildkite", [body], 1))
        path = f"/api/v1/namespaces/{namespace}/pods/buildkite-{uuid}"
        wait_for(
            lambda p=path: sim.kube("GET", p).status_code == 200, timeout=30, what="the pod", every=0.002
        )
        seconds.append(time.monotonic() - started)
    seconds.sort()
    return {
        "samples": samples,
        "p50": round(seconds[len(seconds) // 2], 4),
        "p99": round(seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))], 4),
        "max": round(seconds[-1], 4),
    }


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _operation(body: str) -> str:
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


def _metric(url: str, sample: str) -> float:
    """One sample of the controller's /metrics (0 when absent)."""
    prefix = "buildkite_controller_" + sample + " "
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_baseline(sim: SimulateProcess) -> dict[str, Any]:
    """Create the controller's own pod manifests again, one after another, in another namespace."""
    listed = sim.kube("GET", f"/api/v1/namespaces/{sim.info['namespace']}/pods").json()["items"]
    manifests = [_as_sent(pod) for pod in listed]
    client = kubernetes.config.new_client_from_config(config_file=sim.info["kubeconfig"])
    with client:
        core = kubernetes.client.CoreV1Api(client)
        started = time.monotonic()
        for body in manifests:
            core.create_namespaced_pod(BASELINE_NAMESPACE, body)
        seconds = time.monotonic() - started
    return {
        "pods": len(manifests),
        "seconds": round(seconds, 3),
        "pods_per_second": round(len(manifests) / seconds, 1),
    }


def _as_sent(pod: dict[str, Any]) -> dict[str, Any]:
    metadata = {key: value for key, value in pod["metadata"].items() if key not in SERVER_FIELDS}
    return {
        **{k: v for k, v in pod.items() if k != "status"},
        "metadata": metadata | {"namespace": BASELINE_NAMESPACE},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32, help="webhooks in flight at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-controller-") as tmp:
        workdir = Path(tmp)
        with SimulateProcess(workdir, extra_args=["--no-kubelet", "--points-limit", "100000000"]) as sim:
            controller = run_controller(sim, args.jobs, args.concurrency, workdir)
            sim_cpu = cpu_seconds(sim.process.pid) if sim.process is not None else 0.0
            baseline = run_baseline(sim)
    result = {
        "jobs": args.jobs,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "controller": controller,
        "baseline_raw_creates": baseline,
        "ratio": round(controller["pods_per_second"] / baseline["pods_per_second"], 3),
        "fakes_cpu_seconds_total": round(sim_cpu, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
