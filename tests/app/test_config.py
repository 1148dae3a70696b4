"""Settings: four layers in the right order, agent-stack-k8s keys, strict errors that name the key."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser
from app.config import CONFIG_ENV, OPTIONS, Option, load
from app.durations import parse_duration
from app.errors import ConfigInvalid
from app.logs import LogfmtFormatter, configure
from app.settings import Settings
from podspec.config import PodConfig, PullPolicy


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_need_no_input() -> None:
    settings = load(env={}).settings
    assert settings.pod.namespace == "buildkite"
    assert settings.admit.max_in_flight == 25
    assert settings.sweep.interval_seconds == 60


def test_precedence_is_defaults_then_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "max-in-flight: 5\nnamespace: from-file\norg: file-org\n")
    env = {"BUILDKITE_CONTROLLER_MAX_IN_FLIGHT": "7", "BUILDKITE_ORG": "env-org"}
    settings = load(config_file=path, env=env, flags={"max-in-flight": 9}).settings
    assert settings.admit.max_in_flight == 9
    assert settings.buildkite.org == "env-org"
    assert settings.pod.namespace == "from-file"


def test_agent_stack_k8s_config_file_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
namespace: buildkite
id: my-stack
image: ghcr.io/buildkite/agent:3.136.2
tags: [queue=kubernetes, os=linux]
max-in-flight: 10
pod-pending-timeout: 10m
image-pull-backoff-grace-period: 45s
prometheus-port: 9216
poll-interval: 1s
default-checkout-params:
  cloneFlags: --depth=1
pod-spec-patch:
  serviceAccountName: builder
""",
    )
    loaded = load(config_file=path, env={})
    assert loaded.settings.pod.id == "my-stack"
    assert loaded.settings.lifecycle.pending_timeout_seconds == 600
    assert loaded.settings.lifecycle.image_pull_grace_seconds == 45
    assert loaded.settings.intake.tags == ("queue=kubernetes", "os=linux")
    assert loaded.settings.server.ops_port == 9216  # their metrics port is our ops port (it serves /metrics)
    assert [w for w in loaded.warnings if "poll-interval" in w]
    assert not [w for w in loaded.warnings if "prometheus-port" in w]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("max-in-flightt: 3\n", "max-in-flightt", id="unknown-key"),
        pytest.param("max-in-flight: many\n", "max-in-flight", id="not-an-int"),
        pytest.param("max-in-flight: -1\n", "max-in-flight", id="negative"),
        pytest.param("pod-pending-timeout: soon\n", "pod-pending-timeout", id="bad-duration"),
        pytest.param("default-checkout-params: {bogus: 1}\n", "default-checkout-params", id="nested-unknown"),
        pytest.param("tags: [queue]\n", "tags", id="tag-without-value"),
        pytest.param(
            "default-resource-class-name: huge\n", "default-resource-class-name", id="missing-resource-class"
        ),
        pytest.param("log-level: loud\n", "log-level", id="enum"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load(config_file=write(tmp_path, text), env={})
    assert caught.value.key.startswith(key) or key in str(caught.value)


@pytest.mark.parametrize(
    "text", ["[1, 2]\n", "a: [unclosed\n", "just a string\n"], ids=["list", "broken-yaml", "scalar"]
)
def test_malformed_file_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load(config_file=write(tmp_path, text), env={})
    assert caught.value.key == "config"


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match="cannot read"):
        load(config_file=tmp_path / "nope.yaml", env={})


def test_bad_env_value_names_the_option_and_the_variable() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load(env={"BUILDKITE_CONTROLLER_ALLOW_UNSIGNED_WEBHOOKS": "perhaps"})
    assert caught.value.key == "allow-unsigned-webhooks"
    assert "environment variable BUILDKITE_CONTROLLER_ALLOW_UNSIGNED_WEBHOOKS" in caught.value.reason


def test_secrets_are_never_printed() -> None:
    settings = load(
        env={"BUILDKITE_TOKEN": "bkua_secret", "BUILDKITE_WEBHOOK_SECRET": "hmac-secret"}
    ).settings
    text = repr(settings) + str(settings.model_dump())
    assert "bkua_secret" not in text and "hmac-secret" not in text
    assert settings.buildkite.token is not None
    assert settings.buildkite.token.get_secret_value() == "bkua_secret"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90s", 90), ("15m", 900), ("1h30m", 5400), ("250ms", 0.25), (30, 30), ("0", 0), ("2.5", 2.5)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5 minutes", "m5", "-3s", True, None, [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


# -- agent-stack-k8s compatibility (issue 9) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "value"),
    [
        pytest.param("job-creation-concurrency: 40\n", ("admit", "create_concurrency"), 40, id="concurrency"),
        pytest.param("pagination-page-size: 250\n", ("sweep", "page_size"), 250, id="page-size"),
        pytest.param("pagination-depth-limit: 3\n", ("sweep", "max_pages"), 3, id="depth-limit"),
        pytest.param("prometheus-port: 9216\n", ("server", "ops_port"), 9216, id="prometheus-port"),
        pytest.param("debug: true\n", ("log", "debug"), True, id="debug"),
        pytest.param("graphql-results-limit: 50\n", ("sweep", "page_size"), 50, id="legacy-results-limit"),
        pytest.param(
            "cluster-uuid: 7B4F3C2A-1D5E-4F6A-9B8C-0D1E2F3A4B5C\n",
            ("intake", "cluster_uuid"),
            "7b4f3c2a-1d5e-4f6a-9b8c-0d1e2f3a4b5c",
            id="cluster-uuid-canonical",
        ),
    ],
)
def test_agent_stack_k8s_keys_with_an_equivalent_are_honoured(
    tmp_path: Path, text: str, where: tuple[str, str], value: object
) -> None:
    loaded = load(config_file=write(tmp_path, text), env={})
    section, field = where
    assert getattr(getattr(loaded.settings, section), field) == value
    assert loaded.warnings == ()


def test_the_config_agent_stack_k8s_helm_chart_renders_loads_through_config(tmp_path: Path) -> None:
    # The chart's ConfigMap: its default `config` values plus agent-token-secret, namespace and id
    # (reference §2.3), found through the CONFIG variable the chart sets.
    path = write(
        tmp_path,
        """
prometheus-port: 9216
reservation-expiry-seconds: 900
enable-completion-watcher: true
pod-pending-timeout: 15m
image: ghcr.io/buildkite/agent:3.136.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
agent-token-secret: agent-stack-k8s-secrets
namespace: buildkite
id: agent-stack-k8s
""",
    )
    loaded = load(env={"CONFIG": str(path), "BUILDKITE_TOKEN": "bkua_x"})
    assert loaded.settings.server.ops_port == 9216
    assert loaded.settings.pod.agent_token_secret == "agent-stack-k8s-secrets"
    assert loaded.settings.pod.id == "agent-stack-k8s"
    assert loaded.settings.lifecycle.pending_timeout_seconds == 900
    assert sorted(w.split("'")[1] for w in loaded.warnings) == [
        "enable-completion-watcher",
        "reservation-expiry-seconds",
    ]


def test_config_env_var_names_the_file_as_agent_stack_k8s_helm_chart_sets_it(tmp_path: Path) -> None:
    path = write(tmp_path, "max-in-flight: 4\n")
    assert load(env={"CONFIG": str(path)}).settings.admit.max_in_flight == 4


def test_our_config_variable_and_the_flag_win_over_config(tmp_path: Path) -> None:
    theirs = write(tmp_path, "max-in-flight: 4\n")
    ours = tmp_path / "ours.yaml"
    ours.write_text("max-in-flight: 5\n")
    flag = tmp_path / "flag.yaml"
    flag.write_text("max-in-flight: 6\n")
    env = {"CONFIG": str(theirs), "BUILDKITE_CONTROLLER_CONFIG": str(ours)}
    assert load(env=env).settings.admit.max_in_flight == 5
    assert load(env=env, config_file=flag).settings.admit.max_in_flight == 6


@pytest.mark.parametrize(
    "target", ["missing.yaml", ".", "binary.yaml"], ids=["points-nowhere", "a-directory", "not-utf8"]
)
def test_config_env_var_pointing_at_no_readable_file_is_refused_naming_config(
    tmp_path: Path, target: str
) -> None:
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00max-in-flight: 3")
    with pytest.raises(ConfigInvalid) as caught:
        load(env={"CONFIG": str(tmp_path / target)})
    assert caught.value.key == "CONFIG"


@pytest.mark.parametrize(
    ("env", "where", "value"),
    [
        ({"MAX_IN_FLIGHT": "3"}, ("admit", "max_in_flight"), 3),
        ({"JOB_CREATION_CONCURRENCY": "7"}, ("admit", "create_concurrency"), 7),
        ({"PAGINATION_PAGE_SIZE": "20"}, ("sweep", "page_size"), 20),
        ({"PAGINATION_DEPTH_LIMIT": "2"}, ("sweep", "max_pages"), 2),
        ({"PROMETHEUS_PORT": "9216"}, ("server", "ops_port"), 9216),
        ({"POD_PENDING_TIMEOUT": "2m"}, ("lifecycle", "pending_timeout_seconds"), 120),
        ({"HTTP_TIMEOUT": "5s"}, ("buildkite", "http_timeout_seconds"), 5),
        ({"QUEUE": "gpu"}, ("intake", "queues"), ("gpu",)),
        ({"TAGS": "queue=a,os=linux"}, ("intake", "tags"), ("queue=a", "os=linux")),
        ({"LOG_LEVEL": "warn"}, ("log", "level"), "warning"),
        ({"LOG_FORMAT": "logfmt"}, ("log", "format"), "logfmt"),
        ({"DEBUG": "true"}, ("log", "debug"), True),
        ({"K8S_CLIENT_RATE_LIMITER_QPS": "7.5"}, ("kube", "qps"), 7.5),
        ({"BUILDKITE_K8S_STACK_CONTROLLER_ID": "stack-1"}, ("pod", "id"), "stack-1"),
        ({"NAMESPACE": "jobs"}, ("pod", "namespace"), "jobs"),
        ({"IMAGE": "agent:1"}, ("pod", "image"), "agent:1"),
        ({"AGENT_TOKEN_SECRET": "tok"}, ("pod", "agent_token_secret"), "tok"),
        ({"JOB_ACTIVE_DEADLINE_SECONDS": "60"}, ("pod", "job_active_deadline_seconds"), 60),
        ({"SKIP_IMAGE_CHECK_CONTAINERS": "true"}, ("pod", "skip_image_check_containers"), True),
        ({"PROHIBIT_KUBERNETES_PLUGIN": "1"}, ("pod", "prohibit_kubernetes_plugin"), True),
        ({"DEFAULT_IMAGE_PULL_POLICY": "Always"}, ("pod", "default_image_pull_policy"), "Always"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_agent_stack_k8s_environment_names_are_read(
    env: dict[str, str], where: tuple[str, str], value: object
) -> None:
    section, field = where
    assert getattr(getattr(load(env=env).settings, section), field) == value


def test_our_variable_wins_over_agent_stack_k8s_name() -> None:
    env = {"MAX_IN_FLIGHT": "3", "BUILDKITE_CONTROLLER_MAX_IN_FLIGHT": "8"}
    assert load(env=env).settings.admit.max_in_flight == 8


def test_agent_stack_k8s_settings_without_meaning_warn_from_file_and_env(tmp_path: Path) -> None:
    loaded = load(config_file=write(tmp_path, "job-ttl: 10m\n"), env={"POLL_INTERVAL": "1s"})
    assert len(loaded.warnings) == 2
    assert "job-ttl" in loaded.warnings[0] and "retention" in loaded.warnings[0]
    assert "POLL_INTERVAL" in loaded.warnings[1]


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("debug", "debug"),
        ("info", "info"),
        ("warn", "warning"),
        ("warning", "warning"),
        ("error", "error"),
        ("WARN", "warning"),
        (" Info ", "info"),
    ],
)
def test_every_log_level_of_the_reference_is_accepted(value: str, level: str) -> None:
    assert load(env={"LOG_LEVEL": value}).settings.log.level == level


@pytest.mark.parametrize("value", ["logfmt", "json", "text", "JSON"])
def test_every_log_format_of_the_reference_is_accepted(value: str) -> None:
    assert load(env={"LOG_FORMAT": value}).settings.log.format == value.lower()


def test_debug_forces_the_debug_level() -> None:
    log = load(env={"LOG_LEVEL": "error", "DEBUG": "true"}).settings.log
    assert log.effective_level == "debug"
    assert load(env={"LOG_LEVEL": "error"}).settings.log.effective_level == "error"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("queue: {a: 1}\n", "queue", id="mapping-for-a-list"),
        pytest.param("max-in-flight: [1]\n", "max-in-flight", id="list-for-an-int"),
        pytest.param("org: [acme]\n", "org", id="list-for-a-string"),
        pytest.param("allow-unsigned-webhooks: maybe\n", "allow-unsigned-webhooks", id="not-a-bool"),
        pytest.param("debug: sometimes\n", "debug", id="debug-not-a-bool"),
        pytest.param("log-level: 3\n", "log-level", id="number-for-a-level"),
        pytest.param("log-format: xml\n", "log-format", id="unknown-format"),
        pytest.param("cluster-uuid: 12\n", "cluster-uuid", id="number-for-a-uuid"),
        pytest.param("cluster-uuid: my-cluster\n", "cluster-uuid", id="name-for-a-uuid"),
        pytest.param("pagination-page-size: 1000\n", "pagination-page-size", id="page-over-graphql-limit"),
        pytest.param("pagination-depth-limit: 0\n", "pagination-depth-limit", id="zero-pages"),
        pytest.param("job-creation-concurrency: 0\n", "job-creation-concurrency", id="zero-concurrency"),
        pytest.param("prometheus-port: 70000\n", "ops-port", id="port-out-of-range"),
        pytest.param("webhook-max-skew: 1.5s\n", "webhook-max-skew", id="fractional-skew"),
        pytest.param("reconcile-interval: inf\n", "reconcile-interval", id="infinite-duration"),
        pytest.param("sweep-busy-interval: 0s\n", "sweep-busy-interval", id="zero-interval"),
        pytest.param("intake-batch-size: 101\n", "intake-batch-size", id="batch-over-100"),
        pytest.param("agent-done-grace-period: -1\n", "agent-done-grace-period", id="negative-grace"),
        pytest.param("1: x\n", "1", id="number-key"),
        pytest.param("max-in-flight: 1\nmax-in-flight: 2\n", "config", id="duplicate-key"),
        pytest.param("? [a, b]\n: 1\n", "config", id="list-as-key"),
    ],
)
def test_hostile_config_file_is_refused_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load(config_file=write(tmp_path, text), env={})
    assert caught.value.key == key


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = """
resource-classes:
  small: &small {nodeSelector: {size: small}}
  large:
    <<: *small
    nodeSelector: {size: large}
"""
    pod = load(config_file=write(tmp_path, text), env={}).settings.pod
    assert pod.resource_classes["large"].node_selector == {"size": "large"}


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match="did you mean 'cluster-uuid'"):
        load(config_file=write(tmp_path, "cluster-uiud: x\n"), env={})


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"LOG_LEVEL": "loud"}, "log-level"),
        ({"MAX_IN_FLIGHT": "-1"}, "max-in-flight"),
        ({"BUILDKITE_CONTROLLER_CLUSTER_UUID": "nope"}, "cluster-uuid"),
        ({"PROMETHEUS_PORT": "tcp://10.0.0.7:9090"}, "ops-port"),
        ({"JOB_CREATION_CONCURRENCY": "many"}, "job-creation-concurrency"),
        ({"POD_PENDING_TIMEOUT": "soon"}, "pod-pending-timeout"),
        ({"DEBUG": "verbose"}, "debug"),
        ({"NAMESPACE": "Not_A_Name"}, "namespace"),
        ({"INTAKE_BATCH_SIZE": "0", "BUILDKITE_CONTROLLER_INTAKE_BATCH_SIZE": "0"}, "intake-batch-size"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_hostile_environment_is_refused_naming_the_key_and_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load(env=env)
    assert caught.value.key == key
    assert f"(from environment variable {list(env)[-1]})" in caught.value.reason


def test_variables_agent_stack_k8s_never_had_are_not_read() -> None:
    # Only our prefixed name for options agent-stack-k8s has no flag for: a stray CLUSTER_UUID is not ours.
    assert load(env={"CLUSTER_UUID": "x", "INTAKE_BATCH_SIZE": "0"}).settings == load(env={}).settings


def test_kubernetes_service_link_in_prometheus_port_is_explained() -> None:
    with pytest.raises(ConfigInvalid, match="service link"):
        load(env={"PROMETHEUS_PORT": "tcp://10.0.0.7:9090"})


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load(env={}, flags={"pagination-page-size": 0})
    assert caught.value.key == "pagination-page-size"
    assert caught.value.reason.endswith("(from flag --pagination-page-size)")


def _settable_fields() -> set[tuple[str, str]]:
    """Every field of ``Settings``; for the pod section, every scalar PodConfig key (structured keys such
    as ``pod-spec-patch`` are file-only, as in agent-stack-k8s)."""
    fields = {
        (section, name)
        for section, info in Settings.model_fields.items()
        if section != "pod"
        for name in info.annotation.model_fields  # type: ignore[union-attr]
    }
    for name, info in PodConfig.model_fields.items():
        if info.annotation in (str, int, bool, PullPolicy) and name != "tags":
            fields.add(("pod", info.alias or name))
    return fields


def test_every_setting_can_be_set_by_flag_env_and_file() -> None:
    reachable = {(option.section, option.field) for option in OPTIONS}
    assert _settable_fields() - reachable == set()
    # …and every option lands in a real field.
    assert reachable - _settable_fields() == set()


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.key)
def test_every_option_is_read_from_the_file_and_every_env_name(tmp_path: Path, option: Option) -> None:
    value = _SAMPLE[option.kind]
    if option.key in _SAMPLE_BY_KEY:
        value = _SAMPLE_BY_KEY[option.key]
    expected = load(flags={option.key: value}, env={}).settings
    from_file = load(config_file=write(tmp_path, yaml.safe_dump({option.key: value})), env={}).settings
    assert from_file == expected
    for name in option.env_names:
        assert load(env={name: str(value)}).settings == expected
    assert expected != load(env={}).settings or option.key in _SAME_AS_DEFAULT


_SAMPLE = {"str": "sample", "int": 3, "float": 2.5, "bool": "true", "list": "a", "duration": "7s"}
_SAMPLE_BY_KEY: dict[str, object] = {
    "cluster-uuid": "7b4f3c2a-1d5e-4f6a-9b8c-0d1e2f3a4b5c",
    "tags": "os=linux",
    "graphql-endpoint": "http://127.0.0.1:1/v1",
    "agent-endpoint": "http://127.0.0.1:1/v3",
    "advertise-url": "http://10.0.0.1:8080",
    "log-level": "warn",
    "log-format": "logfmt",
    "lease-duration": "30s",
    "leader-renew-deadline": "2.5s",
    "port": 9000,
    "ops-port": 9216,
    "webhook-max-bytes": 4096,
    "default-image-pull-policy": "Always",
    "default-image-check-pull-policy": "Never",
    "image-check-container-cpu-limit": "300m",
    "image-check-container-memory-limit": "64Mi",
    "default-resource-class-name": "",
    "workspace-mount-sub-path-expr": "$(POD_NAME)",
    "job-prefix": "bk-",
}
_SAME_AS_DEFAULT = {"default-resource-class-name"}


def test_serve_help_lists_every_option_with_its_env_names() -> None:
    parser = build_parser()
    serve = next(
        action.choices["serve"]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    text = " ".join(serve.format_help().split())
    for option in OPTIONS:
        assert f"--{option.key}" in text
        for name in option.env_names:
            assert name in text, (option.key, name)
    for name in CONFIG_ENV:
        assert name in text
    assert "--prometheus-port" in text and "PROMETHEUS_PORT" in text


# -- logs ----------------------------------------------------------------------------------------------


def _record(message: str, **context: object) -> logging.LogRecord:
    record = logging.LogRecord("app.test", logging.WARNING, __file__, 1, message, None, None)
    for key, value in context.items():
        setattr(record, key, value)
    return record


def test_logfmt_lines_are_key_value_pairs_with_quoting() -> None:
    line = LogfmtFormatter().format(_record('pod "x" failed\nnext', job_uuid="0b5a", stage="create"))
    assert " level=warning logger=app.test " in line
    assert 'msg="pod \\"x\\" failed\\nnext"' in line
    assert line.endswith(" job_uuid=0b5a stage=create")
    assert "\n" not in line


def test_configure_accepts_warn_and_logfmt() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure(level="warn", fmt="logfmt")
        assert root.level == logging.WARNING
        assert isinstance(root.handlers[0].formatter, LogfmtFormatter)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
