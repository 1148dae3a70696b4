"""The controller's settings: one table of options, four layers, one validated ``Settings``.

Precedence is defaults < config file < environment < command-line flags, as in agent-stack-k8s. The file
is YAML keyed like agent-stack-k8s' config.yaml, so users can migrate by pointing us at their file: keys
that shape pods pass straight to ``podspec.PodConfig``; keys of theirs that mean nothing here (their
polling, reservation and Job TTL knobs) are accepted with a warning; any other key refuses the start,
naming the key. Secrets (API token, agent token, webhook secret/token) are ``SecretStr``: never printed.
"""

from __future__ import annotations

import difflib
import math
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

    @property
    def env_names(self) -> tuple[str, ...]:
        """Our variable first (it wins), then agent-stack-k8s' name for the same flag, if it has one."""
        theirs = sorted(_upper_snake(k) for k in AGENT_STACK_K8S_FLAGS if FLAG_ALIASES.get(k, k) == self.key)
        return (self.env_name, *(name for name in theirs if name != self.env_name))

    @property
    def help_line(self) -> str:
        return f"{self.help} [env {', '.join(self.env_names)}]"


def _upper_snake(key: str) -> str:
    return key.upper().replace("-", "_")


# Keys that are flags of agent-stack-k8s (reference §2.1); its CLI reads each one from the environment
# too, named by upper-snake-casing the flag (kong's DefaultEnvars), e.g. MAX_IN_FLIGHT. Our
# BUILDKITE_CONTROLLER_* name wins when both are set. (`id` keeps its documented
# BUILDKITE_K8S_STACK_CONTROLLER_ID, `token` the chart's BUILDKITE_TOKEN.)
AGENT_STACK_K8S_FLAGS = frozenset(
    {
        "debug",
        "log-level",
        "log-format",
        "namespace",
        "agent-token-secret",
        "image",
        "tags",
        "queue",
        "max-in-flight",
        "job-creation-concurrency",
        "http-timeout",
        "pagination-page-size",
        "pagination-depth-limit",
        "job-prefix",
        "job-active-deadline-seconds",
        "default-termination-grace-period-seconds",
        "image-pull-backoff-grace-period",
        "job-cancel-checker-poll-interval",
        "pod-pending-timeout",
        "prometheus-port",
        "k8s-client-rate-limiter-qps",
        "k8s-client-rate-limiter-burst",
        "default-image-pull-policy",
        "default-image-check-pull-policy",
        "skip-image-check-containers",
        "image-check-container-cpu-limit",
        "image-check-container-memory-limit",
        "prohibit-kubernetes-plugin",
        "allow-pod-spec-patch-unsafe-command-modification",
        "graphql-endpoint",
    }
)


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
    Option(
        "webhook-max-skew",
        "webhook",
        "max_skew_seconds",
        "oldest (or most future) signature timestamp accepted, against replays",
        kind="duration",
    ),
    # Which jobs are ours.
    Option("queue", "intake", "queues", "queue(s) to serve, comma-separated", kind="list"),
    Option("tags", "intake", "tags", "agent tags k=v, comma-separated", kind="list"),
    Option(
        "cluster-uuid",
        "intake",
        "cluster_uuid",
        "Buildkite cluster UUID: serve only that cluster's jobs (needed when a queue name is reused "
        "across clusters)",
    ),
    Option(
        "intake-batch-size",
        "intake",
        "batch_size",
        "most job UUIDs confirmed by one GraphQL call",
        kind="int",
    ),
    # Admission and the sweep.
    Option(
        "max-in-flight", "admit", "max_in_flight", "most unfinished pods at once (0 = no limit)", kind="int"
    ),
    Option(
        "job-creation-concurrency", "admit", "create_concurrency", "pod creates in flight at once", kind="int"
    ),
    Option("reconcile-interval", "sweep", "interval_seconds", "period of the GraphQL sweep", kind="duration"),
    Option(
        "sweep-busy-interval",
        "sweep",
        "busy_interval_seconds",
        "period of the sweep while it finds jobs no webhook announced",
        kind="duration",
    ),
    Option(
        "pagination-page-size", "sweep", "page_size", "scheduled jobs per GraphQL page (1-500)", kind="int"
    ),
    Option(
        "pagination-depth-limit", "sweep", "max_pages", "most GraphQL pages per queue per sweep", kind="int"
    ),
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
    Option(
        "agent-done-grace-period",
        "lifecycle",
        "agent_done_grace_seconds",
        "how long other containers may run on after the agent container exited",
        kind="duration",
    ),
    Option(
        "pod-log-lines",
        "lifecycle",
        "pod_log_lines",
        "last lines of each failed container's log added to the job's failure (0 = none)",
        kind="int",
    ),
    Option(
        "pod-log-kib",
        "lifecycle",
        "pod_log_kib",
        "most KiB of each failed container's log added to the job's failure",
        kind="int",
    ),
    Option(
        "pod-log-timeout",
        "lifecycle",
        "pod_log_timeout_seconds",
        "longest wait for the failed containers' logs before the job is failed without them",
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
    Option(
        "job-trails",
        "server",
        "job_trails",
        "ended jobs whose decision trail GET /jobs/{uuid} keeps (the oldest are forgotten)",
        kind="int",
    ),
    Option(
        "advertise-url",
        "server",
        "advertise_url",
        "URL followers relay jobs to while this replica leads (default http://$POD_IP:<port>)",
    ),
    Option("log-level", "log", "level", "debug, info, warn (warning) or error"),
    Option("log-format", "log", "format", "json, logfmt or text"),
    Option("debug", "log", "debug", "log at debug level whatever log-level says", kind="bool"),
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
    Option("job-prefix", "pod", "job-prefix", "pod name prefix (name = prefix + job UUID)"),
    Option(
        "job-active-deadline-seconds",
        "pod",
        "job-active-deadline-seconds",
        "activeDeadlineSeconds of each pod",
        kind="int",
    ),
    Option(
        "default-termination-grace-period-seconds",
        "pod",
        "default-termination-grace-period-seconds",
        "terminationGracePeriodSeconds of pods whose podSpec sets none",
        kind="int",
    ),
    Option(
        "default-image-pull-policy",
        "pod",
        "default-image-pull-policy",
        "pull policy of containers that set none (Always, IfNotPresent, Never)",
    ),
    Option(
        "default-image-check-pull-policy",
        "pod",
        "default-image-check-pull-policy",
        "pull policy of the imagecheck-* init containers",
    ),
    Option(
        "skip-image-check-containers",
        "pod",
        "skip-image-check-containers",
        "add no imagecheck-* init containers",
        kind="bool",
    ),
    Option(
        "image-check-container-cpu-limit",
        "pod",
        "image-check-container-cpu-limit",
        "CPU limit of the imagecheck-* containers",
    ),
    Option(
        "image-check-container-memory-limit",
        "pod",
        "image-check-container-memory-limit",
        "memory limit of the imagecheck-* containers",
    ),
    Option(
        "prohibit-kubernetes-plugin",
        "pod",
        "prohibit-kubernetes-plugin",
        "fail every job that uses the kubernetes plugin",
        kind="bool",
    ),
    Option(
        "allow-pod-spec-patch-unsafe-command-modification",
        "pod",
        "allow-pod-spec-patch-unsafe-command-modification",
        "let podSpecPatch change the command/args of the stack's containers",
        kind="bool",
    ),
    Option(
        "workspace-mount-sub-path-expr",
        "pod",
        "workspace-mount-sub-path-expr",
        "subPathExpr of every /workspace mount, e.g. $(POD_NAME)",
    ),
    Option(
        "default-resource-class-name",
        "pod",
        "default-resource-class-name",
        "resource class of jobs without a resource_class tag",
    ),
)
OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}
# Other spellings of a key, in the file and as flags: ours or agent-stack-k8s' (its metrics port is our
# ops port, which serves /metrics).
FLAG_ALIASES = {"agent-image": "image", "prometheus-port": "ops-port"}
# Legacy agent-stack-k8s file keys (its GraphQL era, reference §2.1) that still mean the same here.
FILE_ALIASES = {**FLAG_ALIASES, "buildkite-token": "token", "graphql-results-limit": "pagination-page-size"}

# agent-stack-k8s keys with no meaning here, and why: accepted with a warning so its file still loads.
IGNORED_KEYS: Mapping[str, str] = {
    "no-color": "logs here are never coloured",
    "log-http-payloads": "HTTP bodies are never logged (they hold tokens and job environments)",
    "poll-interval": "webhooks announce jobs; the GraphQL sweep's period is reconcile-interval",
    "query-reset-interval": "unused by agent-stack-k8s too",
    "enable-queue-pause": "unused by agent-stack-k8s too",
    "reservation-expiry-seconds": "jobs are not reserved; each pod acquires its own job",
    "job-ttl": "agent pods are bare Pods, removed after succeeded-pod-retention / failed-pod-retention",
    "work-queue-limit": "waiting jobs are bounded by what Buildkite lists, not by a local queue",
    "empty-job-grace-period": "agent pods are bare Pods, not batch Jobs that may lack a pod",
    "enable-completion-watcher": "the pod watch always handles finished agents (agent-done-grace-period)",
    "profiler-address": "there is no profiler endpoint",
    "stale-job-data-timeout": "job data is always confirmed fresh from GraphQL",
}
POD_KEYS = frozenset(field.alias or name for name, field in PodConfig.model_fields.items())
# The config file's path: our variable, then the one agent-stack-k8s' Helm chart sets.
CONFIG_ENV = ("BUILDKITE_CONTROLLER_CONFIG", "CONFIG")

Origins = dict[tuple[str, str], str]


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
    """Build ``Settings`` from the four layers; raise ``ConfigInvalid`` naming the bad key.

    Without ``config_file``, the file named by ``$BUILDKITE_CONTROLLER_CONFIG`` or ``$CONFIG`` is read.
    Every error names the key and where the bad value came from (file, environment variable or flag).
    """
    env = os.environ if env is None else env
    warnings: list[str] = []
    layers: dict[str, dict[str, Any]] = {}
    origins: Origins = {}
    file_label = "config"
    if config_file is None:
        file_label, config_file = next(
            ((name, env[name]) for name in CONFIG_ENV if env.get(name)), ("", None)
        )
    if config_file is not None:
        data = read_file(config_file, key=file_label or "config")
        file_layer = _file_layer(data, warnings)
        _merge(layers, origins, file_layer, _origins(file_layer, f"config file {config_file}"))
    _merge(layers, origins, *_env_layer(env, warnings))
    _merge(layers, origins, *_flag_layer(flags or {}))
    try:
        settings = Settings.model_validate(layers)
    except ValidationError as exc:
        raise _config_invalid(exc, origins) from None
    return Loaded(settings, tuple(warnings))


def read_file(path: str | Path, *, key: str = "config") -> dict[str, Any]:
    """The YAML config file as a mapping; any problem is a ``ConfigInvalid`` naming ``key`` and the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(key, f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigInvalid(key, f"{path} is not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigInvalid(key, f"{path} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigInvalid(key, f"{path} nests too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigInvalid(key, f"{path} must hold a mapping of keys, got {type(data).__name__}")
    return data


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (PyYAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: merged keys may be overridden here, as YAML intends
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def pod_layer(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a config file that ``podspec.PodConfig`` reads (for `render` and `lint`)."""
    return {key: value for key, value in data.items() if key in POD_KEYS}


def _file_layer(data: Mapping[str, Any], warnings: list[str]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        option = OPTIONS_BY_KEY.get(FILE_ALIASES.get(key, key))
        if option is not None and option.section != "pod":
            _put(layer, option, _coerce(option, value, origin=f"key {key!r} of the config file"))
        elif key in POD_KEYS:
            layer.setdefault("pod", {})[key] = value
        elif key in IGNORED_KEYS:
            warnings.append(
                f"config key {key!r} is an agent-stack-k8s setting with no effect here: "
                f"{IGNORED_KEYS[key]}; ignored"
            )
        else:
            raise ConfigInvalid(key[:100], "unknown key" + _did_you_mean(key))
    return layer


def _env_layer(env: Mapping[str, str], warnings: list[str]) -> tuple[dict[str, dict[str, Any]], Origins]:
    layer: dict[str, dict[str, Any]] = {}
    origins: Origins = {}
    for option in OPTIONS:
        name = next((name for name in option.env_names if env.get(name) not in (None, "")), None)
        if name is not None:
            origin = f"environment variable {name}"
            _put(layer, option, _coerce(option, env[name], origin=origin))
            origins[(option.section, option.field)] = origin
    for key, reason in IGNORED_KEYS.items():
        name = _upper_snake(key)
        if env.get(name) not in (None, ""):
            warnings.append(
                f"environment variable {name} (agent-stack-k8s {key!r}) has no effect here: {reason}; ignored"
            )
    return layer, origins


def _flag_layer(flags: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], Origins]:
    layer: dict[str, dict[str, Any]] = {}
    origins: Origins = {}
    for key, value in flags.items():
        option = OPTIONS_BY_KEY[FLAG_ALIASES.get(key, key)]
        if value is not None:
            _put(layer, option, _coerce(option, value, origin=f"flag --{key}"))
            origins[(option.section, option.field)] = f"flag --{key}"
    return layer, origins


def _put(layer: dict[str, dict[str, Any]], option: Option, value: Any) -> None:
    layer.setdefault(option.section, {})[option.field] = value


def _coerce(option: Option, value: Any, *, origin: str) -> Any:
    """Strings from env and flags become the option's type; bad values name the option and their origin."""
    try:
        if option.kind == "duration":
            seconds = parse_duration(value)
            if not math.isfinite(seconds):
                raise ValueError(f"{value!r} is not a finite duration")
            return seconds
        if option.kind == "list" and isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        if option.kind == "bool" and isinstance(value, str):
            return _parse_bool(value)
        if option.kind == "int" and isinstance(value, str) and "://" in value:
            # Kubernetes sets <SERVICE>_PORT=tcp://… for each Service in the namespace (service links).
            raise ValueError(
                f"{value[:64]!r} is not a port number; it looks like a Kubernetes service link "
                "(set enableServiceLinks: false on the pod, or rename the Service)"
            )
    except ValueError as exc:
        raise ConfigInvalid(option.key, f"{exc} (from {origin})") from None
    return value


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def _origins(layer: Mapping[str, Mapping[str, Any]], origin: str) -> Origins:
    return {(section, str(name)): origin for section, values in layer.items() for name in values}


def _merge(
    into: dict[str, dict[str, Any]],
    origins: Origins,
    layer: Mapping[str, Mapping[str, Any]],
    layer_origins: Origins,
) -> None:
    """Lay ``layer`` over ``into``, remembering where each value came from (for error messages)."""
    for section, values in layer.items():
        into.setdefault(section, {}).update(values)
    origins.update(layer_origins)


def _did_you_mean(key: str) -> str:
    known = [*OPTIONS_BY_KEY, *POD_KEYS, *FILE_ALIASES, *IGNORED_KEYS]
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _config_invalid(exc: ValidationError, origins: Origins) -> ConfigInvalid:
    """The first pydantic error as ``ConfigInvalid``, its location spelled with our option keys."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    origin = origins.get((loc[0], loc[1])) if len(loc) >= 2 else None
    key = _key_of(loc, message)
    return ConfigInvalid(key, f"{message} (from {origin})" if origin else message)


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
