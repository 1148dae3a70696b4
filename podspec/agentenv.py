"""Environment of the ``agent`` container, and the volumes ``agent-config`` adds (reference §2.2, §4.6).

The agent reads its settings from ``BUILDKITE_*`` variables. The order is: the pod contract (k8s
mode, container count, tags, downward API, paths, token, job to acquire, redaction, grace periods),
then ``agent-config``, then the checkout settings. A later setting of the same name replaces the
earlier one in place, so each variable appears once.
"""

from __future__ import annotations

from typing import Any

from podspec.config import AgentConfig
from podspec.gojson import clone
from podspec.inputs import Inputs
from podspec.jwks import SIGNING_DIR, VERIFICATION_DIR, JwksKey, jwks_key

STACK_VERSION = "buildkite-controller-0.1.0"
# buildkite-agent's own default patterns; additional-redacted-vars are appended, never replace them.
AGENT_REDACTED_VARS = (
    "*_PASSWORD", "*_SECRET", "*_TOKEN", "*_PRIVATE_KEY", "*_ACCESS_KEY", "*_SECRET_KEY",
    "*_CONNECTION_STRING", "*_API_KEY",
)  # fmt: skip
HOOKS_PATH = "/workspace/hooks"
PLUGINS_PATH = "/workspace/plugins"
_DOWNWARD = (
    ("BUILDKITE_K8S_NODE", "spec.nodeName"),
    ("BUILDKITE_K8S_NAMESPACE", "metadata.namespace"),
    ("BUILDKITE_K8S_SERVICE_ACCOUNT", "spec.serviceAccountName"),
)
# agent-config key → env var, for plain string / bool settings.
_PLAIN = (
    ("endpoint", "BUILDKITE_AGENT_ENDPOINT"),
    ("no_http2", "BUILDKITE_NO_HTTP2"),
    ("shell", "BUILDKITE_SHELL"),
    ("no_color", "BUILDKITE_AGENT_NO_COLOR"),
    ("strict_single_hooks", "BUILDKITE_STRICT_SINGLE_HOOKS"),
    ("no_multipart_artifact_upload", "BUILDKITE_NO_MULTIPART_ARTIFACT_UPLOAD"),
    ("trace_context_encoding", "BUILDKITE_TRACE_CONTEXT_ENCODING"),
    ("tracing_backend", "BUILDKITE_TRACING_BACKEND"),
    ("tracing_service_name", "BUILDKITE_TRACING_SERVICE_NAME"),
    ("tracing_propagate_traceparent", "BUILDKITE_TRACING_PROPAGATE_TRACEPARENT"),
    ("debug_signing", "BUILDKITE_AGENT_DEBUG_SIGNING"),
    ("git_skip_fetch_existing_commits", "BUILDKITE_GIT_SKIP_FETCH_EXISTING_COMMITS"),
    ("container_start_timeout", "BUILDKITE_KUBERNETES_CONTAINER_START_TIMEOUT"),
    ("no_pty", "BUILDKITE_NO_PTY"),
    ("no_command_eval", "BUILDKITE_NO_COMMAND_EVAL"),
    ("no_local_hooks", "BUILDKITE_NO_LOCAL_HOOKS"),
    ("no_plugins", "BUILDKITE_NO_PLUGINS"),
)


def env_value(value: object) -> str:
    """Go's formatting of a setting: booleans as ``true``/``false``, lists comma-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


class EnvList:
    """An ordered env list where setting an existing name replaces its value in place."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}

    def set(self, name: str, value: object) -> None:
        self._entries[name] = {"name": name, "value": env_value(value)}

    def set_source(self, name: str, source: dict[str, Any]) -> None:
        self._entries[name] = {"name": name, "valueFrom": source}

    def to_list(self) -> list[dict[str, Any]]:
        return list(self._entries.values())


def agent_env(inputs: Inputs, *, container_count: int) -> list[dict[str, Any]]:
    config, job = inputs.config, inputs.job
    env = EnvList()
    env.set("BUILDKITE_KUBERNETES_EXEC", True)
    env.set("BUILDKITE_CONTAINER_COUNT", container_count)
    tags = [f"k8s:agent-stack-version={STACK_VERSION}", *(f"{k}={v}" for k, v in job.agent_tags.items())]
    env.set("BUILDKITE_AGENT_TAGS", tags)
    for name, path in _DOWNWARD:
        env.set_source(name, {"fieldRef": {"fieldPath": path}})
    env.set("BUILDKITE_BUILD_PATH", "/workspace/build")
    env.set("BUILDKITE_HOOKS_PATH", HOOKS_PATH)
    env.set("BUILDKITE_PLUGINS_PATH", PLUGINS_PATH)
    env.set("BUILDKITE_SOCKETS_PATH", "/workspace/sockets/agent")
    env.set("BUILDKITE_SHELL", "/bin/sh -ec")
    token = {"name": config.agent_token_secret, "key": "BUILDKITE_AGENT_TOKEN"}
    env.set_source("BUILDKITE_AGENT_TOKEN", {"secretKeyRef": token})
    env.set("BUILDKITE_AGENT_ACQUIRE_JOB", job.uuid)
    env.set("BUILDKITE_REDACTED_VARS", [*AGENT_REDACTED_VARS, *config.additional_redacted_vars])
    grace = inputs.termination_grace_period_seconds
    env.set("BUILDKITE_CANCEL_GRACE_PERIOD", max(grace, 1))
    env.set("BUILDKITE_SIGNAL_GRACE_PERIOD_SECONDS", max(0, grace - 10))
    if config.agent_config is not None:
        _agent_config_env(env, config.agent_config)
    _checkout_env(env, inputs)
    return env.to_list()


def _agent_config_env(env: EnvList, agent: AgentConfig) -> None:
    for field, name in _PLAIN:
        value = getattr(agent, field)
        if value is not None and value != "":
            env.set(name, value)
    if agent.experiment:
        env.set("BUILDKITE_AGENT_EXPERIMENT", agent.experiment)
    if agent.disable_warnings_for:
        env.set("BUILDKITE_AGENT_DISABLE_WARNINGS_FOR", agent.disable_warnings_for)
    if agent.plugin_validation is not None:
        env.set("BUILDKITE_NO_PLUGIN_VALIDATION", not agent.plugin_validation)
    if agent.hooks_path or agent.hooks_volume:
        env.set("BUILDKITE_HOOKS_PATH", agent.hooks_path or HOOKS_PATH)
    hook_paths = [*agent.additional_hooks_paths, *(hook.path for hook in agent.additional_hooks)]
    if hook_paths:
        env.set("BUILDKITE_ADDITIONAL_HOOKS_PATHS", hook_paths)
    if agent.plugins_path or agent.plugins_volume:
        env.set("BUILDKITE_PLUGINS_PATH", agent.plugins_path or PLUGINS_PATH)
    signing = signing_jwks(agent)
    if signing.file:
        env.set("BUILDKITE_AGENT_SIGNING_JWKS_FILE", signing.file)
    if agent.signing_jwks_key_id:
        env.set("BUILDKITE_AGENT_SIGNING_JWKS_KEY_ID", agent.signing_jwks_key_id)
    verification = verification_jwks(agent)
    verifying = bool(verification.file)
    if verifying:
        env.set("BUILDKITE_AGENT_VERIFICATION_JWKS_FILE", verification.file)
    # Without verification keys there is nothing to verify; don't let the agent block every job.
    behavior = agent.verification_failure_behavior or (None if verifying else "warn")
    if behavior:
        env.set("BUILDKITE_AGENT_JOB_VERIFICATION_NO_SIGNATURE_BEHAVIOR", behavior)


def signing_jwks(agent: AgentConfig) -> JwksKey:
    return jwks_key(
        agent.signing_jwks_file, has_volume=bool(agent.signing_jwks_volume), default_dir=SIGNING_DIR
    )


def verification_jwks(agent: AgentConfig) -> JwksKey:
    return jwks_key(
        agent.verification_jwks_file,
        has_volume=bool(agent.verification_jwks_volume),
        default_dir=VERIFICATION_DIR,
    )


def _checkout_env(env: EnvList, inputs: Inputs) -> None:
    checkout = inputs.checkout
    for value, name in (
        (checkout.checkout_flags, "BUILDKITE_GIT_CHECKOUT_FLAGS"),
        (checkout.clean_flags, "BUILDKITE_GIT_CLEAN_FLAGS"),
        (checkout.clone_flags, "BUILDKITE_GIT_CLONE_FLAGS"),
        (checkout.fetch_flags, "BUILDKITE_GIT_FETCH_FLAGS"),
        (checkout.no_submodules, "BUILDKITE_NO_GIT_SUBMODULES"),
        (checkout.submodule_clone_config, "BUILDKITE_GIT_SUBMODULE_CLONE_CONFIG"),
    ):
        if value is not None:
            env.set(name, value)
    mirrors = checkout.git_mirrors
    if mirrors is None:
        return
    if inputs.git_mirrors_path:
        env.set("BUILDKITE_GIT_MIRRORS_PATH", inputs.git_mirrors_path)
    if mirrors.clone_flags is not None:
        env.set("BUILDKITE_GIT_CLONE_MIRROR_FLAGS", mirrors.clone_flags)
    if mirrors.lock_timeout is not None and mirrors.lock_timeout > 0:
        env.set("BUILDKITE_GIT_MIRRORS_LOCK_TIMEOUT", mirrors.lock_timeout)
    if mirrors.skip_update is not None:
        env.set("BUILDKITE_GIT_MIRRORS_SKIP_UPDATE", mirrors.skip_update)


def agent_config_volumes(agent: AgentConfig | None) -> list[dict[str, Any]]:
    if agent is None:
        return []
    volumes = [agent.hooks_volume, *(h.volume for h in agent.additional_hooks), agent.plugins_volume]
    volumes += [agent.signing_jwks_volume, agent.verification_jwks_volume]
    return [clone(v) for v in volumes if v]


def agent_config_mounts(agent: AgentConfig | None, *, role: str) -> list[dict[str, Any]]:
    """Mounts of the agent-config volumes for ``role`` in ``agent``, ``checkout``, ``command``."""
    if agent is None:
        return []
    mounts = []
    if agent.hooks_volume:
        mounts.append(_mount(agent.hooks_volume, agent.hooks_path or HOOKS_PATH))
    mounts += [_mount(hook.volume, hook.path) for hook in agent.additional_hooks]
    if agent.plugins_volume:
        mounts.append(_mount(agent.plugins_volume, agent.plugins_path or PLUGINS_PATH))
    # The agent checks the signing key at start; commands sign with it (pipeline upload, tool sign).
    signing_dir = signing_jwks(agent).mount_dir
    if agent.signing_jwks_volume and signing_dir and role in ("agent", "command"):
        mounts.append(_mount(agent.signing_jwks_volume, signing_dir))
    verification_dir = verification_jwks(agent).mount_dir
    if agent.verification_jwks_volume and verification_dir and role == "agent":
        mounts.append(_mount(agent.verification_jwks_volume, verification_dir))
    return mounts


def _mount(volume: dict[str, Any], path: str) -> dict[str, Any]:
    return {"name": volume["name"], "mountPath": path}
