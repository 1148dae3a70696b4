"""Controller-level options that shape every pod (``PodConfig``), keyed like agent-stack-k8s' config.yaml.

The service loads its settings file and hands the ``pod`` section here; users migrating from
agent-stack-k8s can paste their config.yaml keys unchanged (reference §2.1-§2.2, §3.4). Defaults are
the Go binary's defaults. Unknown keys are refused (``extra="forbid"``), as the Go parser does, and
every error names the key path, e.g. ``default-checkout-params.gitMirrors.volume``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from podspec.gojson import is_quantity
from podspec.images import parse_image_reference
from podspec.jwks import SIGNING_DIR, VERIFICATION_DIR, check_jwks_file
from podspec.metadata import check_metadata, is_dns_subdomain, is_label_value
from podspec.params import (
    CheckoutParams,
    CommandParams,
    Metadata,
    ParamsModel,
    SidecarParams,
    Volume,
    k8s_checked,
)
from podspec.patching import check_controller_patch, decode_patch

DEFAULT_AGENT_IMAGE = "ghcr.io/buildkite/agent:3.136.2"
PullPolicy = Literal["", "Always", "IfNotPresent", "Never"]
# Go's time.ParseDuration grammar, which the agent applies to BUILDKITE_KUBERNETES_CONTAINER_START_TIMEOUT.
_GO_DURATION = re.compile(r"0|([0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+")
ResourceRequirements = Annotated[dict[str, Any], k8s_checked("ResourceRequirements")]


class AdditionalHook(ParamsModel):
    path: str = Field(min_length=1)
    volume: Volume


class AgentConfig(ParamsModel):
    """``agent-config``: settings for buildkite-agent inside the pod (reference §2.2)."""

    endpoint: str | None = None
    no_http2: bool | None = Field(None, alias="no-http2")
    experiment: list[str] = Field(default_factory=list)
    shell: str | None = None
    no_color: bool | None = Field(None, alias="no-color")
    strict_single_hooks: bool | None = Field(None, alias="strict-single-hooks")
    no_multipart_artifact_upload: bool | None = Field(None, alias="no-multipart-artifact-upload")
    trace_context_encoding: str | None = Field(None, alias="trace-context-encoding")
    tracing_backend: Literal["", "datadog", "opentelemetry"] | None = Field(None, alias="tracing-backend")
    tracing_service_name: str | None = Field(None, alias="tracing-service-name")
    tracing_propagate_traceparent: bool | None = Field(None, alias="tracing-propagate-traceparent")
    disable_warnings_for: list[str] = Field(default_factory=list, alias="disable-warnings-for")
    debug_signing: bool | None = Field(None, alias="debug-signing")
    git_skip_fetch_existing_commits: bool | None = Field(None, alias="git-skip-fetch-existing-commits")
    container_start_timeout: str | None = Field(None, alias="container-start-timeout")
    no_pty: bool | None = Field(None, alias="no-pty")
    no_command_eval: bool | None = Field(None, alias="no-command-eval")
    no_local_hooks: bool | None = Field(None, alias="no-local-hooks")
    no_plugins: bool | None = Field(None, alias="no-plugins")
    plugin_validation: bool | None = Field(None, alias="plugin-validation")
    hooks_path: str | None = Field(None, alias="hooks-path")
    hooks_volume: Volume | None = Field(None, alias="hooksVolume")
    additional_hooks_paths: list[str] = Field(default_factory=list, alias="additional-hooks-paths")
    additional_hooks: list[AdditionalHook] = Field(default_factory=list, alias="additional-hooks")
    plugins_path: str | None = Field(None, alias="plugins-path")
    plugins_volume: Volume | None = Field(None, alias="pluginsVolume")
    signing_jwks_file: str | None = Field(None, alias="signing-jwks-file")
    signing_jwks_key_id: str | None = Field(None, alias="signing-jwks-key-id")
    signing_jwks_volume: Volume | None = Field(None, alias="signingJWKSVolume")
    verification_jwks_file: str | None = Field(None, alias="verification-jwks-file")
    verification_jwks_volume: Volume | None = Field(None, alias="verificationJWKSVolume")
    verification_failure_behavior: Literal["block", "warn"] | None = Field(
        None, alias="verification-failure-behavior"
    )

    @model_validator(mode="after")
    def _jwks_files(self) -> AgentConfig:
        for path, volume, default_dir, key in (
            (self.signing_jwks_file, self.signing_jwks_volume, SIGNING_DIR, "signing-jwks-file"),
            (
                self.verification_jwks_file,
                self.verification_jwks_volume,
                VERIFICATION_DIR,
                "verification-jwks-file",
            ),
        ):
            try:
                check_jwks_file(path, has_volume=bool(volume), default_dir=default_dir)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        return self

    @field_validator("container_start_timeout", mode="before")
    @classmethod
    def _go_duration(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value}s"  # YAML `container-start-timeout: 300` means seconds
        if isinstance(value, str) and not _GO_DURATION.fullmatch(value):
            raise ValueError(f"{value!r} is not a duration such as 5m or 90s")
        return value


class ResourceClass(ParamsModel):
    """One entry of ``resource-classes`` (reference §3.4), picked by the job tag ``resource_class``."""

    resource: ResourceRequirements | None = None
    pod_resource: ResourceRequirements | None = Field(None, alias="podResource")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")


class PodConfig(ParamsModel):
    """Everything the controller contributes to a pod; each default is agent-stack-k8s' default."""

    namespace: str = "default"
    # Label `buildkite.com/controller-id`; controllers sharing a namespace must differ.
    id: str = ""
    agent_token_secret: str = Field("buildkite-agent-token", alias="agent-token-secret")
    image: str = DEFAULT_AGENT_IMAGE
    tags: list[str] = Field(default_factory=list)
    job_prefix: str = Field("buildkite-", alias="job-prefix")
    # Six hours: a safety net so a stuck pod cannot bill forever (agent-stack-k8s issue #480).
    job_active_deadline_seconds: int = Field(21600, alias="job-active-deadline-seconds", gt=0)
    default_termination_grace_period_seconds: int = Field(
        60, alias="default-termination-grace-period-seconds", ge=0
    )
    default_image_pull_policy: PullPolicy = Field("", alias="default-image-pull-policy")
    default_image_check_pull_policy: PullPolicy = Field("", alias="default-image-check-pull-policy")
    skip_image_check_containers: bool = Field(False, alias="skip-image-check-containers")
    image_check_container_cpu_limit: str = Field("200m", alias="image-check-container-cpu-limit")
    image_check_container_memory_limit: str = Field("128Mi", alias="image-check-container-memory-limit")
    prohibit_kubernetes_plugin: bool = Field(False, alias="prohibit-kubernetes-plugin")
    allow_pod_spec_patch_unsafe_command_modification: bool = Field(
        False, alias="allow-pod-spec-patch-unsafe-command-modification"
    )
    pod_spec_patch: dict[str, Any] | None = Field(None, alias="pod-spec-patch")
    workspace_volume: Volume | None = Field(None, alias="workspace-volume")
    workspace_mount_sub_path_expr: str = Field("", alias="workspace-mount-sub-path-expr")
    agent_config: AgentConfig | None = Field(None, alias="agent-config")
    default_checkout_params: CheckoutParams = Field(
        default_factory=CheckoutParams, alias="default-checkout-params"
    )
    default_command_params: CommandParams = Field(
        default_factory=CommandParams, alias="default-command-params"
    )
    default_sidecar_params: SidecarParams = Field(
        default_factory=SidecarParams, alias="default-sidecar-params"
    )
    default_metadata: Metadata = Field(default_factory=Metadata, alias="default-metadata")
    additional_redacted_vars: list[str] = Field(default_factory=list, alias="additional-redacted-vars")
    resource_classes: dict[str, ResourceClass] = Field(default_factory=dict, alias="resource-classes")
    default_resource_class_name: str = Field("", alias="default-resource-class-name")

    @field_validator("tags", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # The CLI/env form is one comma-separated string.
        if isinstance(value, str):
            return [tag.strip() for tag in value.split(",") if tag.strip()]
        return value

    @field_validator("namespace", "agent_token_secret")
    @classmethod
    def _object_name(cls, value: str) -> str:
        if not is_dns_subdomain(value) or not value:
            raise ValueError(
                f"{value!r} is not a valid Kubernetes name (lower-case letters, digits, '-', '.')"
            )
        return value

    @field_validator("id")
    @classmethod
    def _label_value(cls, value: str) -> str:
        if not is_label_value(value):
            raise ValueError(f"{value!r} cannot be a label value (63 characters of [A-Za-z0-9_.-])")
        return value

    @field_validator("job_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        # Pod name = prefix + job UUID (36 characters of [0-9a-f-]).
        if not is_dns_subdomain(value + "0" * 36):
            raise ValueError(f"{value!r} followed by a job UUID is not a valid pod name")
        return value

    @field_validator("default_metadata")
    @classmethod
    def _metadata(cls, value: Metadata) -> Metadata:
        check_metadata(value.labels, value.annotations, field="default-metadata")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        parse_image_reference(value)  # its ValueError names the problem
        return value

    @field_validator("image_check_container_cpu_limit", "image_check_container_memory_limit")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not is_quantity(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity such as 200m or 128Mi")
        return value

    @field_validator("pod_spec_patch")
    @classmethod
    def _patch(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else decode_patch(value, path="", strict=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> PodConfig:
        if self.default_resource_class_name and self.default_resource_class_name not in self.resource_classes:
            raise ValueError(
                f"default-resource-class-name {self.default_resource_class_name!r} is not in resource-classes"
            )
        if self.pod_spec_patch:
            check_controller_patch(
                self.pod_spec_patch, allow_commands=self.allow_pod_spec_patch_unsafe_command_modification
            )
        return self
