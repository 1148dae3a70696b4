"""Pipeline-signing keys: the reference's TestPipelineSigningOptions cases, plus where each volume is mounted.

The mount path is the point of agent-stack-k8s ``normaliseJWKSFile``: the agent reads the file named by
``BUILDKITE_AGENT_*_JWKS_FILE``, so the volume must be mounted at that file's directory.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pytest
from pydantic import ValidationError

from podspec import build
from tests.podspec.builders import make_config, make_job

SIGNING_VOLUME = {"name": "signing-key-volume", "secret": {"secretName": "signing"}}
VERIFICATION_VOLUME = {"name": "verification-key-volume", "secret": {"secretName": "verification"}}
SIGNING_ENV = "BUILDKITE_AGENT_SIGNING_JWKS_FILE"
VERIFICATION_ENV = "BUILDKITE_AGENT_VERIFICATION_JWKS_FILE"


def _pod(agent_config: dict[str, Any] | None) -> dict[str, Any]:
    config = make_config(agent_config=agent_config) if agent_config is not None else make_config()
    return build(make_job(plugin={"podSpec": {"containers": [{"image": "alpine"}]}}), config=config).manifest


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


# (agent-config, agent env wanted (None: must be absent), agent mounts, command mounts) — name → path.
CASES = {
    "nil config": (None, {SIGNING_ENV: None, VERIFICATION_ENV: None}, {}, {}),
    "no keys": ({}, {SIGNING_ENV: None, VERIFICATION_ENV: None}, {}, {}),
    "verification key only": (
        {
            "verification-jwks-file": "/path/to/verification.jwks",
            "verificationJWKSVolume": VERIFICATION_VOLUME,
        },
        {VERIFICATION_ENV: "/path/to/verification.jwks", SIGNING_ENV: None},
        {"verification-key-volume": "/path/to"},
        {},
    ),
    "signing key only": (
        {"signing-jwks-file": "/path/to/signing.jwks", "signingJWKSVolume": SIGNING_VOLUME},
        {SIGNING_ENV: "/path/to/signing.jwks", VERIFICATION_ENV: None},
        {"signing-key-volume": "/path/to"},
        {"signing-key-volume": "/path/to"},
    ),
    "both keys": (
        {
            "verification-jwks-file": "/verification/path/verification.jwks",
            "verificationJWKSVolume": VERIFICATION_VOLUME,
            "signing-jwks-file": "/signing/path/signing.jwks",
            "signingJWKSVolume": SIGNING_VOLUME,
        },
        {SIGNING_ENV: "/signing/path/signing.jwks", VERIFICATION_ENV: "/verification/path/verification.jwks"},
        {"signing-key-volume": "/signing/path", "verification-key-volume": "/verification/path"},
        {"signing-key-volume": "/signing/path"},
    ),
    "both volumes only": (
        {"verificationJWKSVolume": VERIFICATION_VOLUME, "signingJWKSVolume": SIGNING_VOLUME},
        {SIGNING_ENV: "/buildkite/signing-jwks/key", VERIFICATION_ENV: "/buildkite/verification-jwks/key"},
        {
            "signing-key-volume": "/buildkite/signing-jwks",
            "verification-key-volume": "/buildkite/verification-jwks",
        },
        {"signing-key-volume": "/buildkite/signing-jwks"},
    ),
    "relative paths": (
        {
            "verificationJWKSVolume": VERIFICATION_VOLUME,
            "verification-jwks-file": "my-awesome-key",
            "signingJWKSVolume": SIGNING_VOLUME,
            "signing-jwks-file": "my-special-key",
        },
        {
            SIGNING_ENV: "/buildkite/signing-jwks/my-special-key",
            VERIFICATION_ENV: "/buildkite/verification-jwks/my-awesome-key",
        },
        {
            "signing-key-volume": "/buildkite/signing-jwks",
            "verification-key-volume": "/buildkite/verification-jwks",
        },
        {"signing-key-volume": "/buildkite/signing-jwks"},
    ),
    "relative path in a sub-directory": (
        {"signingJWKSVolume": SIGNING_VOLUME, "signing-jwks-file": "./keys/signing.json"},
        {SIGNING_ENV: "/buildkite/signing-jwks/keys/signing.json"},
        {"signing-key-volume": "/buildkite/signing-jwks"},
        {"signing-key-volume": "/buildkite/signing-jwks"},
    ),
    # Without a volume the key is in the image: the path goes to the agent as written, nothing is mounted.
    "file without a volume": (
        {"signing-jwks-file": "keys/signing.json", "verification-jwks-file": "/etc/keys/verify.json"},
        {SIGNING_ENV: "keys/signing.json", VERIFICATION_ENV: "/etc/keys/verify.json"},
        {},
        {},
    ),
}


@pytest.mark.parametrize(("agent_config", "env", "agent_mounts", "command_mounts"), CASES.values(), ids=CASES)
def test_pipeline_signing_options(
    agent_config: dict[str, Any] | None,
    env: dict[str, str | None],
    agent_mounts: dict[str, str],
    command_mounts: dict[str, str],
) -> None:
    pod = _pod(agent_config)
    agent, command, checkout = (_container(pod, n) for n in ("agent", "container-0", "checkout"))
    agent_env = _env(agent)
    for name, value in env.items():
        assert agent_env.get(name) == value, name
    key_volumes = {SIGNING_VOLUME["name"], VERIFICATION_VOLUME["name"]}
    assert {k: v for k, v in _mounts(agent).items() if k in key_volumes} == agent_mounts
    assert {k: v for k, v in _mounts(command).items() if k in key_volumes} == command_mounts
    assert not key_volumes & set(_mounts(checkout))
    pod_volumes = {v["name"] for v in pod["spec"]["volumes"]}
    assert key_volumes & pod_volumes == set(agent_mounts)


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][2]])
def test_every_key_file_lies_in_the_directory_its_volume_is_mounted_at(case: str) -> None:
    agent_config, _, _, _ = CASES[case]
    agent = _container(_pod(agent_config), "agent")
    agent_env, mounts = _env(agent), _mounts(agent)
    for env_name, volume in ((SIGNING_ENV, SIGNING_VOLUME), (VERIFICATION_ENV, VERIFICATION_VOLUME)):
        if volume["name"] in mounts:
            assert (
                posixpath.commonpath([agent_env[env_name], mounts[volume["name"]]]) == mounts[volume["name"]]
            )


@pytest.mark.parametrize(
    ("key", "path", "reason"),
    [
        pytest.param("signing-jwks-file", "/key.json", "is in /", id="absolute-in-root"),
        pytest.param(
            "signing-jwks-file", "../elsewhere/key.json", "leaves /buildkite/signing-jwks", id="escapes"
        ),
        pytest.param(
            "verification-jwks-file", ".", "leaves /buildkite/verification-jwks", id="the-directory"
        ),
        pytest.param("verification-jwks-file", "/keys/", "names a directory", id="trailing-slash"),
    ],
)
def test_a_key_file_its_volume_cannot_hold_is_refused_naming_the_key(
    key: str, path: str, reason: str
) -> None:
    volume_key = "signingJWKSVolume" if key.startswith("signing") else "verificationJWKSVolume"
    with pytest.raises(ValidationError) as info:
        make_config(agent_config={key: path, volume_key: SIGNING_VOLUME})
    assert key in str(info.value) and reason in str(info.value)
