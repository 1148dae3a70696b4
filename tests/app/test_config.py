"""Settings: four layers in the right order, agent-stack-k8s keys, strict errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import load
from app.durations import parse_duration
from app.errors import ConfigInvalid


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
    assert any("prometheus-port" in warning for warning in loaded.warnings)


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


def test_bad_env_value_names_the_option() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load(env={"BUILDKITE_CONTROLLER_ALLOW_UNSIGNED_WEBHOOKS": "perhaps"})
    assert caught.value.key == "allow-unsigned-webhooks"


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
