"""copy-agent and checkout scripts: valid POSIX shell in every variant, and the non-root checkout."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from podspec import build
from podspec.scripts import RunAs, checkout_script, copy_agent_script
from tests.podspec.builders import container, make_config, make_job

VARIANTS = [
    pytest.param(None, False, id="root"),
    pytest.param(None, True, id="root-git-credentials"),
    pytest.param(RunAs(1000), False, id="uid-only"),
    pytest.param(RunAs(1000, 2000), False, id="uid-and-gid"),
    pytest.param(RunAs(1000, 2000), True, id="uid-gid-git-credentials"),
]


def shell_syntax_errors(script: str) -> str:
    sh = shutil.which("sh")
    assert sh is not None
    return subprocess.run([sh, "-n", "-c", script], capture_output=True, text=True, check=False).stderr


@pytest.mark.parametrize(("run_as", "credentials"), VARIANTS)
def test_scripts_are_valid_posix_shell(run_as: RunAs | None, credentials: bool) -> None:
    assert shell_syntax_errors(checkout_script(run_as=run_as, git_credentials=credentials)) == ""
    assert shell_syntax_errors(copy_agent_script(run_as)) == ""


def test_the_root_checkout_script_is_the_reference_one() -> None:
    expected = "set -exuf\ntrue\nbuildkite-agent-entrypoint kubernetes-bootstrap"
    assert checkout_script(run_as=None, git_credentials=False) == expected


def test_non_root_checkout_creates_the_user_and_drops_to_it() -> None:
    script = checkout_script(run_as=RunAs(1000), git_credentials=False)
    assert "useradd -M -d /workspace -s /bin/sh -u 1000 -g root buildkite-agent" in script
    assert "adduser -D -H -h /workspace -s /bin/sh -u 1000 -G root buildkite-agent" in script
    assert script.endswith("su buildkite-agent -c 'buildkite-agent-entrypoint kubernetes-bootstrap'")


def test_non_root_git_credentials_are_configured_as_the_user() -> None:
    script = checkout_script(run_as=RunAs(1000, 2000), git_credentials=True)
    assert "chown -R 1000:2000 /buildkite/git-credentials" in script
    assert "su buildkite-agent -c 'git config --global credential.helper" in script


@pytest.mark.parametrize(
    ("security_context", "is_root_setup"),
    [
        pytest.param(None, False, id="no-security-context"),
        pytest.param({"runAsUser": 0}, False, id="explicit-root"),
        pytest.param({"runAsNonRoot": True}, False, id="non-root-without-uid"),
        pytest.param({"runAsUser": 1000}, True, id="uid"),
    ],
)
def test_only_a_non_zero_pod_uid_switches_checkout_and_copy_agent_to_root(
    security_context: dict | None, is_root_setup: bool
) -> None:
    spec = {} if security_context is None else {"securityContext": security_context}
    manifest = build(make_job(plugin={"podSpec": spec}), config=make_config()).manifest
    for name in ("checkout", "copy-agent"):
        assert ("securityContext" in container(manifest, name)) is is_root_setup
    assert ("chown -R" in container(manifest, "copy-agent")["args"][1]) is is_root_setup
