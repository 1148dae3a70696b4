"""`buildkite-controller simulate`: a fake cluster and a fake Buildkite to run the controller against.

Starts the fake kube-apiserver (with a simulated node unless `--no-kubelet`) and the fake Buildkite on
loopback, writes a kubeconfig for the former, prints ONE JSON line on stdout (URLs, tokens,
organisation, queue, kubeconfig path, demo job ids), then serves until SIGTERM or SIGINT and exits 0.
Drive it over HTTP: the Kubernetes API itself, the fake Buildkite's `/_test/...` control API, and the
bulk routes of `simulate_control`. For example:

    buildkite-controller simulate --kubeconfig-out /tmp/kc --jobs 5 > sim.json &
    BUILDKITE_TOKEN=$(jq -r .token sim.json) ... buildkite-controller serve --kubeconfig /tmp/kc ...
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType


def add_simulate_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `simulate` on the `buildkite-controller` command's subparsers."""
    parser = commands.add_parser("simulate", help="serve a fake cluster and a fake Buildkite on loopback")
    parser.add_argument("--kube-port", type=_port, default=0, help="fake kube-apiserver port (0 = any)")
    parser.add_argument("--buildkite-port", type=_port, default=0, help="fake Buildkite port (0 = any)")
    parser.add_argument("--kubeconfig-out", default=None, help="where to write the kubeconfig")
    parser.add_argument("--namespace", default="buildkite", help="namespace named in the kubeconfig")
    parser.add_argument("--queue", default="kubernetes", help="queue of the demo jobs")
    parser.add_argument("--jobs", type=_count, default=0, help="demo jobs to create at start")
    parser.add_argument("--points-limit", type=_positive, default=20_000, help="GraphQL points per 5 minutes")
    parser.add_argument(
        "--kubelet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the simulated node that drives pods to completion (off for load tests)",
    )
    parser.set_defaults(handler=run)


def run(namespace: argparse.Namespace) -> int:
    # Imported here: the fakes need the `simulate` extra (graphql-core), which the image does not install,
    # and `buildkite-controller serve` registers this command without running it.
    from app.simulate.stack import Simulation, SimulationOptions

    options = SimulationOptions(
        kube_port=namespace.kube_port,
        buildkite_port=namespace.buildkite_port,
        kubeconfig_out=namespace.kubeconfig_out,
        namespace=namespace.namespace,
        queue=namespace.queue,
        jobs=namespace.jobs,
        points_limit=namespace.points_limit,
        kubelet=namespace.kubelet,
    )
    stop = threading.Event()
    # Handlers first: a signal that arrives while the fakes start must still end the command cleanly.
    previous = {sig: signal.signal(sig, _setter(stop)) for sig in (signal.SIGTERM, signal.SIGINT)}
    simulation = Simulation(options)
    try:
        try:
            info = simulation.start()
        except OSError as exc:
            print(f"buildkite-controller simulate: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(json.dumps(info), flush=True)
        while not stop.wait(3600):
            pass
        simulation.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _setter(event: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handle(_signum: int, _frame: FrameType | None) -> None:
        event.set()

    return handle


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be negative")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
