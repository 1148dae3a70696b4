"""The manifests against the controller's own code: its config loader, CLI and RBAC needs.

Input: deploy/ rendered by `kubectl kustomize` (fixtures in conftest.py), and the controller's
`app.config.load`, `app.cli.build_parser` and `app.kube.REQUIRED_RBAC`. A renamed option, env var or
flag, or a new API call without its Role rule, fails here instead of in a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.cli import build_parser, setting_flags
from app.config import load
from app.settings import Settings

Obj = dict[str, Any]


def one(objects: list[Obj], kind: str) -> Obj:
    (match,) = [obj for obj in objects if obj["kind"] == kind]
    return match


def pod_environment(deployment: Obj) -> dict[str, str]:
    """The environment the kubelet would give the container, with a stand-in for each Secret value."""
    downward = {
        "metadata.name": "buildkite-controller-7d9c-abcde",
        "metadata.namespace": deployment["metadata"]["namespace"],
        "status.podIP": "10.1.2.3",
    }
    env: dict[str, str] = {}
    for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        source = item.get("valueFrom", {})
        if "fieldRef" in source:
            env[item["name"]] = downward[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            env[item["name"]] = f"value-of-{source['secretKeyRef']['key']}"
        else:
            env[item["name"]] = item["value"]
    return env


def loaded_settings(objects: list[Obj], tmp_path: Path) -> Settings:
    deployment = one(objects, "Deployment")
    config = tmp_path / "config.yaml"
    config.write_text(one(objects, "ConfigMap")["data"]["config.yaml"])
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    namespace = build_parser().parse_args(args)
    flags = {key: value for key, value in setting_flags(namespace).items() if value is not None}
    loaded = load(config_file=config, env=pod_environment(deployment), flags=flags)
    assert loaded.warnings == ()
    return loaded.settings


@pytest.mark.parametrize("which", ["overlay", "base"])
def test_configmap_and_env_load_into_settings_that_match_the_manifests(
    overlay_objects: list[Obj], base_objects: list[Obj], which: str, tmp_path: Path
) -> None:
    objects = overlay_objects if which == "overlay" else base_objects
    settings = loaded_settings(objects, tmp_path)
    deployment = one(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert (settings.server.port, settings.server.ops_port) == (ports["http"], ports["ops"])
    # Pods go to the jobs namespace, where its Role grants pods; the Lease to the controller's own.
    roles = {role["metadata"]["namespace"]: role for role in objects if role["kind"] == "Role"}
    assert any("pods" in rule["resources"] for rule in roles[settings.pod.namespace]["rules"])
    assert settings.leader.lease_namespace == deployment["metadata"]["namespace"] != settings.pod.namespace
    lease_rules = [
        rule for rule in roles[settings.leader.lease_namespace]["rules"] if "resourceNames" in rule
    ]
    assert [rule["resourceNames"] for rule in lease_rules] == [[settings.leader.lease_name]]


def test_secret_and_downward_api_reach_the_settings(overlay_objects: list[Obj], tmp_path: Path) -> None:
    settings = loaded_settings(overlay_objects, tmp_path)
    assert settings.leader.identity == "buildkite-controller-7d9c-abcde"
    assert settings.buildkite.token is not None
    assert settings.buildkite.token.get_secret_value() == "value-of-BUILDKITE_TOKEN"
    assert settings.buildkite.agent_token is not None
    assert settings.buildkite.agent_token.get_secret_value() == "value-of-BUILDKITE_AGENT_TOKEN"
    assert settings.webhook.secret is not None
    assert settings.webhook.secret.get_secret_value() == "value-of-BUILDKITE_WEBHOOK_SECRET"
    assert settings.server.ops_token is not None
    assert settings.server.ops_token.get_secret_value() == "value-of-BUILDKITE_CONTROLLER_OPS_TOKEN"


def test_deployment_args_parse_as_the_serve_command(overlay_objects: list[Obj]) -> None:
    container = one(overlay_objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    namespace = build_parser().parse_args(container["args"])
    assert namespace.command == "serve"
    assert namespace.config == "/etc/buildkite-controller/config.yaml"
