"""Test helpers for the pod builder: jobs, configs, plugin env, and golden manifests.

``make_job(plugin=..., **env)`` builds a ``Job`` whose BUILDKITE_PLUGINS holds ``plugin``;
``make_config(**keys)`` takes agent-stack-k8s config keys (kebab-case, as in config.yaml);
``assert_golden(name, built)`` compares a ``BuiltPod`` with ``golden/<name>.yaml`` and validates it
against the strict Kubernetes Pod schema. ``UPDATE_GOLDEN=1`` rewrites the files instead — then read
every diff against reference/agent-stack-k8s.md §4 before committing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from podspec import BuiltPod, Job, PodConfig
from podspec.job import KUBERNETES_PLUGIN_KEY
from tests.podspec.schema import assert_valid_pod

GOLDEN_DIR = Path(__file__).with_name("golden")
JOB_UUID = "0199a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b"
AGENT_IMAGE = "ghcr.io/buildkite/agent:3.136.2"
DIGEST_IMAGE = "ghcr.io/buildkite/agent@sha256:" + "d" * 64
BUILD_ENV = {
    "BUILDKITE_BUILD_URL": "https://buildkite.com/acme/app/builds/42",
    "BUILDKITE_BRANCH": "main",
    "BUILDKITE_REPO": "git@github.com:acme/app.git",
    "BUILDKITE_PIPELINE_SLUG": "app",
    "BUILDKITE_STEP_KEY": "unit",
}
# The reference's worked example (agent-stack-k8s.md §4.11): the golden test's and the bench's typical job.
WORKED_EXAMPLE_PLUGIN = {
    "metadata": {"labels": {"team": "ci"}},
    "gitEnvFrom": [{"secretRef": {"name": "git-ssh"}}],
    "sidecars": [{"image": "redis:7"}],
    "podSpec": {
        "containers": [
            {"image": "golang:1.23", "command": ["go test ./..."], "resources": {"requests": {"cpu": "2"}}}
        ]
    },
}


def plugins_env(plugin: Any, *others: dict[str, Any]) -> str:
    return json.dumps([*others, {KUBERNETES_PLUGIN_KEY: plugin}])


def make_job(
    *,
    plugin: Any = None,
    command: str = "make test",
    tags: dict[str, str] | None = None,
    priority: int = 0,
    uuid: str = JOB_UUID,
    **env: str,
) -> Job:
    full_env = {**BUILD_ENV, **env}
    if plugin is not None:
        full_env["BUILDKITE_PLUGINS"] = plugins_env(plugin)
    return Job(
        uuid=uuid,
        command=command,
        env=full_env,
        agent_tags={"queue": "kubernetes"} if tags is None else tags,
        priority=priority,
    )


def make_config(**keys: Any) -> PodConfig:
    """A PodConfig from config.yaml keys; Python identifiers stand for kebab-case keys."""
    return PodConfig.model_validate({key.replace("_", "-"): value for key, value in keys.items()})


class _GoldenDumper(yaml.SafeDumper):
    """Block style for multi-line strings, so scripts in goldens read like scripts."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None  # PyYAML falls back to quoting where "|" cannot work
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_GoldenDumper.add_representer(str, _str)


def render(built: BuiltPod) -> str:
    document = {"warnings": list(built.warnings), "pod": built.manifest}
    return yaml.dump(document, Dumper=_GoldenDumper, sort_keys=False, width=100, allow_unicode=True)


def assert_golden(name: str, built: BuiltPod) -> None:
    assert_valid_pod(built.manifest)
    path = GOLDEN_DIR / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(render(built))
    assert path.exists(), f"no golden file {path.name}; run with UPDATE_GOLDEN=1 and review it"
    expected = yaml.safe_load(path.read_text())
    assert {"warnings": list(built.warnings), "pod": built.manifest} == expected


def container(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    spec = manifest["spec"]
    (found,) = [c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name]
    return found


def env_of(container_: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_.get("env", [])}


def names(manifest: dict[str, Any], list_name: str = "containers") -> list[str]:
    return [c["name"] for c in manifest["spec"].get(list_name, [])]
