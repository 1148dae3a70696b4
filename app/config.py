"""The controller's settings: one table of options, four layers, one validated ``Settings``.

Precedence is defaults < config file < environment < command-line flags, as in agent-stack-k8s. The file
is YAML keyed like agent-stack-k8s' config.yaml, so users can migrate by pointing us at their file: keys
that shape pods pass straight to ``podspec.PodConfig``; keys of theirs that mean nothing here (their
polling, reservation and Job TTL knobs) are accepted with a warning; any other key refuses the start,
naming the key. Secrets (API token, agent token, webhook secret/token) are ``SecretStr``: never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.durations import parse_duration
from app.errors import ConfigInvalid
from app.settings import Settings
from podspec.config import PodConfig


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its file key and flag (``--<key>``), where it lands, and its environment variable."""

    key: str
    section: str
    field: str
    help: str
    env: str = ""
    kind: str = "str"  # str | int | float | bool | list | duration
    secret: bool = False

    @property
    def env_name(self) -> str:
        return self.env or "BUILDKITE_CONTROLLER_" + self.key.upper().replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    # Buildkite access. The well-known variable names let a Deployment take them straight from a Secret.
    Option(
        "token", "buildkite", "token", "Buildkite API token (GraphQL access)", "BUILDKITE_TOKEN", secret=True
    ),
    Option("org", "buildkite", "org", "Buildkite organization slug", "BUILDKITE_ORG"),
    Option(
        "agent-token",
        "buildkite",
        "agent_token",
        "cluster agent token, used to fail jobs that cannot run",
        "BUILDKITE_AGENT_TOKEN",
        secret=True,
    ),
    Option("graphql-endpoint", "buildkite", "graphql_endpoint", "GraphQL endpoint URL"),
    Option("agent-endpoint", "buildkite", "agent_endpoint", "agent REST API endpoint URL"),
    Option(
        "http-timeout", "buildkite", "http_timeout_seconds", "timeout of one Buildkite call", kind="duration"
    ),
    # Webhook intake.
    Option(
        "webhook-secret",
        "webhook",
        "secret",
        "HMAC secret of Buildkite's webhook signature",
        "BUILDKITE_WEBHOOK_SECRET",
        secret=True,
    ),
    Option(
        "webhook-token",
        "webhook",
        "token",
        "plain webhook token (X-Buildkite-Token)",
        "BUILDKITE_WEBHOOK_TOKEN",
        secret=True,
    ),
    Option(
        "allow-unsigned-webhooks", "webhook", "allow_unsigned", "accept webhooks without auth", kind="bool"
    ),
    Option("webhook-max-bytes", "webhook", "max_body_bytes", "largest webhook body accepted", kind="int"),
    # Which jobs are ours.
    Option("queue", "intake", "queues", "queue(s) to serve, comma-separated", kind="list"),
    Option("tags", "intake", "tags", "agent tags k=v, comma-separated", kind="list"),
    # Admission and the sweep.
    Option(
        "max-in-flight", "admit", "max_in_flight", "most unfinished pods at once (0 = no limit)", kind="int"
    ),
    Option("reconcile-interval", "sweep", "interval_seconds", "period of the GraphQL sweep", kind="duration"),
    # Lifecycle.
    Option(
        "image-pull-backoff-grace-period",
        "lifecycle",
        "image_pull_grace_seconds",
        "how long an image may fail to pull before the job is failed",
        kind="duration",
    ),
    Option(
        "pod-pending-timeout",
        "lifecycle",
        "pending_timeout_seconds",
        "how long a pod may stay Pending before the job is failed",
        kind="duration",
    ),
    Option(
        "job-cancel-checker-poll-interval",
        "lifecycle",
        "cancel_check_interval_seconds",
        "period of the batched state check of pending pods",
        kind="duration",
    ),
    Option(
        "succeeded-pod-retention",
        "lifecycle",
        "succeeded_retention_seconds",
        "how long a succeeded pod is kept",
        kind="duration",
    ),
    Option(
        "failed-pod-retention",
        "lifecycle",
        "failed_retention_seconds",
        "how long a failed pod is kept for inspection",
        kind="duration",
    ),
    # Kubernetes.
    Option(
        "kubeconfig",
        "kube",
        "kubeconfig",
        "kubeconfig path (default ~/.kube/config, else in-cluster)",
        "KUBECONFIG",
    ),
    Option("k8s-client-rate-limiter-qps", "kube", "qps", "Kubernetes API requests per second", kind="float"),
    Option("k8s-client-rate-limiter-burst", "kube", "burst", "Kubernetes API burst", kind="int"),
    Option("leader-lease-name", "leader", "lease_name", "name of the leader-election Lease"),
    Option(
        "leader-lease-namespace",
        "leader",
        "lease_namespace",
        "namespace of the leader-election Lease (default: the jobs namespace)",
        "POD_NAMESPACE",
    ),
    Option("leader-identity", "leader", "identity", "this replica's identity in the Lease", "POD_NAME"),
    Option("lease-duration", "leader", "lease_duration_seconds", "leader Lease duration", kind="duration"),
    Option(
        "leader-renew-interval",
        "leader",
        "renew_interval_seconds",
        "how often the leader renews its Lease (shorter than the lease duration)",
        kind="duration",
    ),
    Option(
        "leader-renew-deadline",
        "leader",
        "renew_deadline_seconds",
        "a leader unable to renew for this long stops leading (between renew interval and lease duration)",
        kind="duration",
    ),
    # Serving.
    Option("host", "server", "host", "address to listen on"),
    Option("port", "server", "port", "port to listen on", kind="int"),
    Option("ops-port", "server", "ops_port", "port of the ops endpoints (0 = the main port)", kind="int"),
    Option(
        "ops-token",
        "server",
        "ops_token",
        "bearer token for POST /reconcile (without one, loopback clients only)",
        "BUILDKITE_CONTROLLER_OPS_TOKEN",
        secret=True,
    ),
    Option("log-level", "log", "level", "debug, info, warning or error"),
    Option("log-format", "log", "format", "json or text"),
    # Pod-shaping options with a flag; the rest are file-only, as in agent-stack-k8s.
    Option("namespace", "pod", "namespace", "namespace of the agent pods"),
    Option(
        "id",
        "pod",
        "id",
        "controller id (label buildkite.com/controller-id)",
        "BUILDKITE_K8S_STACK_CONTROLLER_ID",
    ),
    Option("image", "pod", "image", "agent image (alias --agent-image)"),
    Option(
        "agent-token-secret", "pod", "agent-token-secret", "Secret holding BUILDKITE_AGENT_TOKEN for pods"
    ),
)
OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}
FLAG_ALIASES = {"agent-image": "image"}

# agent-stack-k8s keys that have no meaning here (we do not poll the stacks API nor create batch Jobs).
IGNORED_KEYS = frozenset(
    {
        "debug",
        "no-color",
        "log-http-payloads",
        "poll-interval",
        "pagination-page-size",
        "pagination-depth-limit",
        "query-reset-interval",
        "enable-queue-pause",
        "reservation-expiry-seconds",
        "job-ttl",
        "job-creation-concurrency",
        "work-queue-limit",
        "empty-job-grace-period",
        "enable-completion-watcher",
        "prometheus-port",
        "profiler-address",
    }
)
POD_KEYS = frozenset(field.alias or name for name, field in PodConfig.model_fields.items())


@dataclass(frozen=True, slots=True)
class Loaded:
    settings: Settings
    warnings: tuple[str, ...]


def load(
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Loaded:
    """Build ``Settings`` from the four layers; raise ``ConfigInvalid`` naming the bad key."""
    env = os.environ if env is None else env
    warnings: list[str] = []
    layers: dict[str, dict[str, Any]] = {}
    if config_file is not None:
        _merge(layers, _file_layer(read_file(config_file), warnings))
    _merge(layers, _env_layer(env))
    _merge(layers, _flag_layer(flags or {}))
    try:
        settings = Settings.model_validate(layers)
    except ValidationError as exc:
        raise _config_invalid(exc) from None
    return Loaded(settings, tuple(warnings))


def read_file(path: str | Path) -> dict[str, Any]:
    """The YAML config file as a mapping; any problem is a ``ConfigInvalid`` naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid("config", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigInvalid("config", f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigInvalid("config", f"{path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def pod_layer(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a config file that ``podspec.PodConfig`` reads (for `render` and `lint`)."""
    return {key: value for key, value in data.items() if key in POD_KEYS}


def _file_layer(data: Mapping[str, Any], warnings: list[str]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        key = str(key)
        option = OPTIONS_BY_KEY.get(FLAG_ALIASES.get(key, key))
        if option is not None and option.section != "pod":
            layer.setdefault(option.section, {})[option.field] = _coerce(option, value)
        elif key in POD_KEYS:
            layer.setdefault("pod", {})[key] = value
        elif key in IGNORED_KEYS:
            warnings.append(f"config key {key!r} is an agent-stack-k8s setting with no effect here; ignored")
        else:
            raise ConfigInvalid(key, "unknown key")
    return layer


def _env_layer(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for option in OPTIONS:
        value = env.get(option.env_name)
        if value not in (None, ""):
            layer.setdefault(option.section, {})[option.field] = _coerce(option, value)
    return layer


def _flag_layer(flags: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for key, value in flags.items():
        option = OPTIONS_BY_KEY[FLAG_ALIASES.get(key, key)]
        if value is not None:
            layer.setdefault(option.section, {})[option.field] = _coerce(option, value)
    return layer


def _coerce(option: Option, value: Any) -> Any:
    """Strings from env and flags become the option's type; bad values name the option."""
    try:
        if option.kind == "duration":
            return parse_duration(value)
        if option.kind == "list" and isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        if option.kind == "bool" and isinstance(value, str):
            return _parse_bool(value)
    except ValueError as exc:
        raise ConfigInvalid(option.key, str(exc)) from None
    return value


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def _merge(into: dict[str, dict[str, Any]], layer: Mapping[str, Mapping[str, Any]]) -> None:
    for section, values in layer.items():
        into.setdefault(section, {}).update(values)


def _config_invalid(exc: ValidationError) -> ConfigInvalid:
    """The first pydantic error as ``ConfigInvalid``, its location spelled with our option keys."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return ConfigInvalid(_key_of(loc, message), message)


def _key_of(loc: list[str], message: str) -> str:
    if len(loc) >= 2:
        for option in OPTIONS:
            if (option.section, option.field) == (loc[0], loc[1]):
                return ".".join([option.key, *loc[2:]])
        return ".".join(loc[1:]) if loc[0] == "pod" else ".".join(loc)
    if loc == ["pod"]:
        # A check across several pod keys: name the first key the message speaks of.
        mentioned = [key for key in POD_KEYS if key in message]
        if mentioned:
            return min(mentioned, key=message.index)
    return ".".join(loc) or "config"
