"""Benchmark of the pure pod builder: pods built per second on one core, and a same-run baseline.

Two jobs: a *typical* one (the reference's worked example: one podSpec container, a sidecar,
gitEnvFrom, metadata) and a *heavy* one (three containers, two sidecars, controller and plugin
patches, checkout params with mirrors and credentials, a resource class, agent-config volumes).
Each is timed beside ``copy.deepcopy`` of its own resulting manifest — a fixed amount of dict work
on this machine — so ``ratio_to_deepcopy`` can be compared across machines and runs.

    python bench/bench_podspec.py [--seconds 2]     # prints one JSON object
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from podspec import Job, PodConfig, build
from podspec.job import KUBERNETES_PLUGIN_KEY
from tests.podspec.builders import BUILD_ENV, WORKED_EXAMPLE_PLUGIN

TYPICAL_PLUGIN = WORKED_EXAMPLE_PLUGIN
HEAVY_PLUGIN = {
    "metadata": {"labels": {"team": "ci", "tier": "heavy"}, "annotations": {"owner": "platform"}},
    "gitEnvFrom": [{"secretRef": {"name": "git-ssh"}}],
    "sidecars": [
        {"image": "redis:7", "ports": [{"containerPort": 6379}]},
        {"name": "dind", "image": "docker:27-dind", "securityContext": {"privileged": True}},
    ],
    "sidecarParams": {"envFrom": [{"configMapRef": {"name": "sidecar-env"}}]},
    "extraVolumeMounts": [{"name": "cache", "mountPath": "/cache"}],
    "checkout": {
        "cloneFlags": "--depth=1",
        "fetchFlags": "--prune",
        "gitMirrors": {"volume": {"name": "mirrors", "persistentVolumeClaim": {"claimName": "m"}}},
        "gitCredentialsSecret": {"secretName": "git-credentials"},
        "envFrom": [{"secretRef": {"name": "checkout-env"}}],
    },
    "commandParams": {"interposer": "vector", "envFrom": [{"configMapRef": {"name": "build-env"}}]},
    "podSpec": {
        "serviceAccountName": "ci",
        "volumes": [{"name": "cache", "emptyDir": {}}],
        "containers": [
            {
                "name": "build",
                "image": "golang:1.23",
                "command": ["make"],
                "args": ["build", "GOFLAGS=-mod=vendor"],
                "env": [{"name": f"VAR_{i}", "value": str(i)} for i in range(10)],
            },
            {"name": "lint", "image": "golangci/golangci-lint:v1.61", "command": ["golangci-lint run ./..."]},
            {"name": "test", "image": "golang:1.23", "resources": {"limits": {"memory": "4Gi"}}},
        ],
    },
    "podSpecPatch": {
        "tolerations": [{"key": "ci", "operator": "Exists"}],
        "containers": [
            {"name": "test", "command": ["go", "test", "-race", "./..."]},
            {"name": "agent", "resources": {"requests": {"cpu": "200m"}}},
        ],
    },
}
HEAVY_CONFIG = {
    "id": "bench",
    "namespace": "buildkite",
    "agent-config": {"hooksVolume": {"name": "hooks", "configMap": {"name": "hooks"}}, "experiment": ["a"]},
    "pod-spec-patch": {"priorityClassName": "ci", "containers": [{"name": "checkout", "resources": {}}]},
    "resource-classes": {
        "large": {"resource": {"requests": {"cpu": "4"}}, "nodeSelector": {"size": "large"}}
    },
    "default-resource-class-name": "large",
    "default-checkout-params": {"envFrom": [{"secretRef": {"name": "default-checkout"}}]},
}


def make_job(plugin: dict[str, Any], uuid: str) -> Job:
    env = {**BUILD_ENV, "BUILDKITE_PLUGINS": json.dumps([{KUBERNETES_PLUGIN_KEY: plugin}])}
    return Job(uuid=uuid, command="make test", env=env, agent_tags={"queue": "kubernetes"})


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, float]:
    """Calls per wall second and CPU seconds per call, over at least ``seconds``."""
    fn()  # warm caches
    calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - wall0) < seconds:
        for _ in range(50):
            fn()
        calls += 50
    return calls / elapsed, (time.process_time() - cpu0) / calls


def measure(name: str, job: Job, config: PodConfig, seconds: float) -> dict[str, Any]:
    manifest = build(job, config=config).manifest
    pods_per_second, cpu_per_pod = rate(lambda: build(job, config=config), seconds)
    copies_per_second, _ = rate(lambda: copy.deepcopy(manifest), seconds)
    return {
        "case": name,
        "pods_per_second": round(pods_per_second),
        "cpu_ms_per_pod": round(cpu_per_pod * 1000, 3),
        "deepcopies_per_second": round(copies_per_second),
        "ratio_to_deepcopy": round(copies_per_second / pods_per_second, 2),
        "manifest_bytes": len(json.dumps(manifest)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the goal is stated
    uuid = "0199a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b"
    typical = measure("typical", make_job(TYPICAL_PLUGIN, uuid), PodConfig(), args.seconds)
    heavy = measure(
        "heavy", make_job(HEAVY_PLUGIN, uuid), PodConfig.model_validate(HEAVY_CONFIG), args.seconds
    )
    goal = 2000
    print(json.dumps({"goal_pods_per_second": goal, "meets_goal": typical["pods_per_second"] >= goal,
                      "results": [typical, heavy]}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
