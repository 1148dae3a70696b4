"""PodConfig: agent-stack-k8s config.yaml keys, Go defaults, and errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from podspec.config import DEFAULT_AGENT_IMAGE, PodConfig


def error_of(data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        PodConfig.model_validate(data)
    first = caught.value.errors()[0]
    return ".".join(str(p) for p in first["loc"]), first["msg"]


def test_defaults_are_the_go_binary_defaults() -> None:
    config = PodConfig()
    assert config.namespace == "default"
    assert config.image == DEFAULT_AGENT_IMAGE
    assert config.agent_token_secret == "buildkite-agent-token"
    assert config.job_prefix == "buildkite-"
    assert config.job_active_deadline_seconds == 21600
    assert config.default_termination_grace_period_seconds == 60
    assert (config.image_check_container_cpu_limit, config.image_check_container_memory_limit) == (
        "200m",
        "128Mi",
    )
    assert config.default_image_pull_policy == config.default_image_check_pull_policy == ""
    assert config.agent_config is None and config.pod_spec_patch is None


def test_an_agent_stack_k8s_config_file_loads_unchanged() -> None:
    text = """
    namespace: buildkite
    id: ci-large
    agent-token-secret: agent-stack-k8s-secrets
    image: ghcr.io/buildkite/agent:3.136.2
    tags: [queue=kubernetes]
    job-prefix: bk-
    job-active-deadline-seconds: 3600
    default-termination-grace-period-seconds: 30
    default-image-pull-policy: IfNotPresent
    default-image-check-pull-policy: Always
    skip-image-check-containers: false
    image-check-container-cpu-limit: 500m
    image-check-container-memory-limit: 256Mi
    prohibit-kubernetes-plugin: false
    allow-pod-spec-patch-unsafe-command-modification: false
    workspace-volume:
      name: workspace
      ephemeral: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce]}}}
    workspace-mount-sub-path-expr: $(POD_NAME)
    pod-spec-patch: {serviceAccountName: ci, containers: [{name: agent, resources: {requests: {cpu: 100m}}}]}
    agent-config: {endpoint: "https://agent.example", container-start-timeout: 10m, experiment: [a, b]}
    default-checkout-params: {cloneFlags: --depth=1, gitMirrors: {path: /m, lockTimeout: 60}}
    default-command-params: {interposer: vector}
    default-sidecar-params: {envFrom: [{secretRef: {name: s}}]}
    default-metadata: {labels: {team: ci}, annotations: {owner: me}}
    additional-redacted-vars: [MY_*]
    resource-classes: {large: {resource: {requests: {cpu: "4"}}, nodeSelector: {size: large}}}
    default-resource-class-name: large
    """
    config = PodConfig.model_validate(yaml.safe_load(text))
    assert config.id == "ci-large"
    assert config.default_checkout_params.git_mirrors is not None
    assert config.default_checkout_params.git_mirrors.lock_timeout == 60
    assert config.resource_classes["large"].node_selector == {"size": "large"}
    assert config.agent_config is not None and config.agent_config.container_start_timeout == "10m"


def test_python_field_names_are_accepted_too() -> None:
    assert PodConfig(job_prefix="x-").job_prefix == "x-"


def test_tags_accept_the_comma_separated_cli_form() -> None:
    assert PodConfig.model_validate({"tags": "queue=k8s, os=linux"}).tags == ["queue=k8s", "os=linux"]


BAD_CONFIGS = [
    pytest.param({"namespace": "Build Kite"}, "namespace", "not a valid Kubernetes name", id="namespace"),
    pytest.param({"agent-token-secret": ""}, "agent-token-secret", "not a valid", id="empty-secret-name"),
    pytest.param({"id": "a/b"}, "id", "cannot be a label value", id="controller-id"),
    pytest.param({"job-prefix": "Job_"}, "job-prefix", "not a valid pod name", id="job-prefix"),
    pytest.param({"image": "Agent:1"}, "image", "must be lowercase", id="agent-image"),
    pytest.param(
        {"default-metadata": {"labels": {"a": "b c"}}},
        "default-metadata",
        "not a valid label value",
        id="labels",
    ),
    pytest.param({"max-inflight": 3}, "max-inflight", "Extra inputs", id="unknown-key"),
    pytest.param(
        {"default-image-pull-policy": "Sometimes"}, "default-image-pull-policy", "", id="bad-pull-policy"
    ),
    pytest.param(
        {"image-check-container-cpu-limit": "fast"}, "image-check-container-cpu-limit", "quantity", id="qty"
    ),
    pytest.param(
        {"job-active-deadline-seconds": 0}, "job-active-deadline-seconds", "greater than 0", id="deadline"
    ),
    pytest.param(
        {"agent-config": {"container-start-timeout": "soon"}},
        "agent-config.container-start-timeout",
        "duration",
        id="bad-duration",
    ),
    pytest.param(
        {"agent-config": {"no-such": 1}}, "agent-config.no-such", "Extra inputs", id="agent-config-extra"
    ),
    pytest.param(
        {"default-checkout-params": {"gitMirrors": {"volume": {"name": "m", "emptyDir": {"medium": 3}}}}},
        "default-checkout-params.gitMirrors.volume",
        "emptyDir.medium: must be a string (got 3)",
        id="nested-k8s-type",
    ),
    pytest.param(
        {"workspace-volume": {"name": "w", "emptyDirectory": {}}},
        "workspace-volume",
        "emptyDirectory: unknown field",
        id="config-k8s-types-are-strict",
    ),
    pytest.param(
        {"default-resource-class-name": "huge"},
        "",
        "'huge' is not in resource-classes",
        id="default-class-missing",
    ),
    pytest.param(
        {"agent-config": {"additional-hooks": [{"path": "/h", "volume": {"emptyDir": {}}}]}},
        "agent-config.additional-hooks.0.volume",
        "name: is required",
        id="additional-hook-volume-unnamed",
    ),
    pytest.param(
        {"pod-spec-patch": {"containers": [{"name": "x", "image": "Alpine"}]}},
        "",
        "pod-spec-patch.containers[0].image: image references must be lower-case",
        id="patch-uppercase-image",
    ),
    pytest.param(
        {"pod-spec-patch": {"initContainers": [{"name": "sidecar-0", "command": ["x"]}]}},
        "",
        "pod-spec-patch.initContainers[0].command: changing container commands",
        id="patch-command-even-for-sidecars",
    ),
    pytest.param(
        {"pod-spec-patch": {"containers": [{"name": "agent", "image": 5}]}},
        "pod-spec-patch",
        "containers[0].image: must be a string (got 5)",
        id="patch-type-error",
    ),
]


@pytest.mark.parametrize(("data", "key", "message"), BAD_CONFIGS)
def test_bad_config_is_refused_naming_the_key(data: dict[str, Any], key: str, message: str) -> None:
    loc, msg = error_of(data)
    assert loc == key
    assert message in msg


def test_the_unsafe_flag_allows_commands_in_the_controller_patch() -> None:
    patch = {"containers": [{"name": "agent", "command": ["x"]}]}
    config = PodConfig.model_validate(
        {"pod-spec-patch": patch, "allow-pod-spec-patch-unsafe-command-modification": True}
    )
    assert config.pod_spec_patch == patch


def test_the_controller_patch_keeps_directives() -> None:
    patch = {"containers": [{"name": "checkout", "$patch": "delete"}]}
    assert PodConfig.model_validate({"pod-spec-patch": patch}).pod_spec_patch == patch


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        PodConfig().namespace = "x"  # type: ignore[misc]
