"""Ingest: signed webhooks/s answered 2xx on one core, the controller beside a bare FastAPI handler.

Both servers get the same `wrk` load (loopback, `--threads 1 --connections 16 --duration 10s`) of the
same ~1.7 KB `job.scheduled` payload, each server pinned to CPU 0 with `taskset` and `wrk` and the fakes
to CPU 1 (on a machine with one CPU, nothing is pinned). The payloads are signed here, up front, with
a fresh timestamp (well inside the 5-minute window) and a different job UUID in each of
`--variants` bodies, which the wrk Lua script cycles through: the controller takes each job up
(it is not a duplicate), as it would in production. The bare handler (`bench/ingest_bare.py`) only
verifies the HMAC and parses the JSON. Prints one JSON object with both rates and the ratio.

Each of ``--rounds`` (3) pairs runs both servers afresh, alternating which goes first; the ratio is the
median round's, and every round is printed.

    python bench/bench_ingest.py [--duration 10] [--connections 16] [--variants 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from app.simulate.process import SimulateProcess, controller_env, terminate
from app.simulate.webhook_sender import sign

SECRET = "bench-webhook-secret"
PATH = "/webhooks/buildkite"
ROOT = Path(__file__).resolve().parents[1]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# wrk's Lua: cycle through pre-signed requests; count statuses so non-2xx answers are reported.
LUA = """
local requests = {}
local bodies = dofile("%(bodies)s")
local counts = {}
init = function(args)
  for i, entry in ipairs(bodies) do
    requests[i] = wrk.format("POST", "%(path)s", {
      ["Content-Type"] = "application/json",
      ["X-Buildkite-Event"] = "job.scheduled",
      ["X-Buildkite-Signature"] = entry[1],
    }, entry[2])
  end
end
local n = 0
request = function()
  n = n %% #requests + 1
  return requests[n]
end
"""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpus() -> tuple[list[str], list[str]]:
    """(taskset prefix for the server, for everything else)."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return [], []
    return ["taskset", "-c", "0"], ["taskset", "-c", "1"]


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not answer within {timeout} s")


def lua_bodies(template: bytes, count: int, path: Path) -> None:
    """A Lua file returning {{signature, body}, ...}: `count` bodies, each with a fresh job UUID."""
    text = template.decode()
    old = UUID.search(text)
    if old is None:
        raise SystemExit("bench: the webhook body names no job UUID")
    now = int(time.time())
    lines = ["return {"]
    for _ in range(count):
        body = text.replace(old.group(0), str(uuid.uuid4())).encode()
        lines.append(f"{{{lua_string(sign(SECRET, now, body).encode())}, {lua_string(body)}}},")
    lines.append("}")
    path.write_text("\n".join(lines))


def lua_string(data: bytes) -> str:
    return (
        '"'
        + "".join(
            f"\\{byte:03d}" if byte < 32 or byte in (34, 92) or byte > 126 else chr(byte) for byte in data
        )
        + '"'
    )


def run_wrk(url: str, script: Path, args: argparse.Namespace, pin: list[str]) -> dict[str, Any]:
    command = [
        *pin,
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(args.connections),
        "--duration",
        f"{args.duration}s",
        "--latency",
        "--script",
        str(script),
        url + PATH,
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=args.duration + 60, check=True
    ).stdout
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    seconds_match = re.search(r"requests in ([\d.]+)(m?s)", output)
    seconds = float(seconds_match.group(1)) / (1000 if seconds_match.group(2) == "ms" else 1)  # type: ignore[union-attr]
    bad_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors_match = re.search(r"Socket errors: (.*)", output)
    bad = int(bad_match.group(1)) if bad_match else 0
    return {
        "requests": total,
        "non_2xx": bad,
        "socket_errors": errors_match.group(1) if errors_match else None,
        "per_second_2xx": round((total - bad) / seconds, 1),
        "latency_p50": re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE).group(1),  # type: ignore[union-attr]
        "latency_p99": re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE).group(1),  # type: ignore[union-attr]
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def confirm_figures(url: str, requests: int) -> dict[str, Any]:
    """The controller's GraphQL confirms during the run, from its /metrics: each new job is confirmed."""
    text = httpx.get(url + "/metrics", timeout=10).text

    def sample(name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    batches = sample("buildkite_controller_confirm_batch_size_count")
    jobs = sample("buildkite_controller_confirm_batch_size_sum")
    return {
        "confirm_requests": int(batches),
        "jobs_confirmed": int(jobs),
        "jobs_per_confirm": round(jobs / max(batches, 1), 1),
        "confirms_per_1000_requests": round(batches * 1000 / max(requests, 1), 1),
    }


def measure(
    command: list[str],
    env: dict[str, str],
    url: str,
    ready: str,
    script: Path,
    args: argparse.Namespace,
    workdir: Path,
    name: str,
    *,
    report: Callable[[str, int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One server under wrk; ``report(url, requests)`` adds figures read from it before it stops."""
    server_pin, other_pin = cpus()
    log = (workdir / f"{name}.log").open("ab")
    process = subprocess.Popen(
        [*server_pin, *command], stdout=log, stderr=log, env={**os.environ, **env}, cwd=ROOT
    )
    log.close()
    try:
        wait_ready(url + ready)
        before = cpu_seconds(process.pid)
        result = run_wrk(url, script, args, other_pin)
        cpu = cpu_seconds(process.pid) - before
        result["server_cpu_seconds"] = round(cpu, 2)
        # On a loaded machine the pinned core is shared: CPU per request is the steadier comparison.
        result["server_cpu_ms_per_2xx"] = round(
            cpu * 1000 / max(1, result["requests"] - result["non_2xx"]), 3
        )
        if report is not None:
            result |= report(url, result["requests"])
    finally:
        terminate(process)
    return result


def run_controller(
    sim: SimulateProcess, script: Path, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    port = free_port()
    env = controller_env(
        sim.info,
        webhook_secret=SECRET,
        port=str(port),
        log_level="warning",
        reconcile_interval="1h",
        max_in_flight="0",
    ) | {"POD_NAME": "bench-ingest"}
    command = [sys.executable, "-m", "app.cli", "serve"]
    url = f"http://127.0.0.1:{port}"
    return measure(command, env, url, "/readyz", script, args, workdir, "controller", report=confirm_figures)


def run_bare(script: Path, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = free_port()
    command = [
        *(sys.executable, "-m", "uvicorn", "bench.ingest_bare:app", "--host", "127.0.0.1"),
        *("--port", str(port), "--no-access-log", "--log-level", "warning"),
    ]
    env = {"BENCH_WEBHOOK_SECRET": SECRET}
    return measure(command, env, f"http://127.0.0.1:{port}", "/docs", script, args, workdir, "bare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--variants", type=int, default=5000, help="distinct signed bodies (job UUIDs)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating controller/bare pairs")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install -y wrk)")
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        _, other_pin = cpus()
        sim = SimulateProcess(workdir, extra_args=["--no-kubelet", "--points-limit", "100000000"])
        with sim:
            if other_pin:
                subprocess.run(
                    ["taskset", "-p", "-c", "1", str(sim.process.pid)], capture_output=True, check=False
                )  # type: ignore[union-attr]
            template = sim.webhook_bodies(sim.add_jobs(1))[0]
            script = workdir / "signed.lua"
            for number in range(args.rounds):
                # Signed afresh each round, so a long run stays inside the 5-minute replay window.
                bodies = workdir / f"bodies-{number}.lua"
                lua_bodies(template, args.variants, bodies)
                script.write_text(LUA % {"bodies": bodies, "path": PATH})
                # Alternate which goes first, so a drift in the machine's load favours neither side.
                if number % 2 == 0:
                    ours = run_controller(sim, script, args, workdir)
                    theirs = run_bare(script, args, workdir)
                else:
                    theirs = run_bare(script, args, workdir)
                    ours = run_controller(sim, script, args, workdir)
                rounds.append(
                    {
                        "controller": ours,
                        "bare_fastapi_hmac_json": theirs,
                        "ratio": round(ours["per_second_2xx"] / max(theirs["per_second_2xx"], 0.1), 3),
                        "cpu_per_request_ratio": round(
                            theirs["server_cpu_ms_per_2xx"] / max(ours["server_cpu_ms_per_2xx"], 0.001), 3
                        ),
                    }
                )
    result = {
        "payload_bytes": len(template),
        "pinned": bool(cpus()[0]),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "rounds": rounds,
        # The median round's figures: one noisy 10 s window on a shared machine does not decide.
        "ratio": round(statistics.median(r["ratio"] for r in rounds), 3),
        "cpu_per_request_ratio": round(statistics.median(r["cpu_per_request_ratio"] for r in rounds), 3),
        "controller_per_second_2xx": statistics.median(r["controller"]["per_second_2xx"] for r in rounds),
        "bare_per_second_2xx": statistics.median(
            r["bare_fastapi_hmac_json"]["per_second_2xx"] for r in rounds
        ),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
