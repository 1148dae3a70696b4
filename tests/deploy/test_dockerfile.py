"""The Dockerfile and .dockerignore: a small, non-root, read-only-friendly image of the wheel.

Input: the repository's `Dockerfile` (read by tests/deploy/dockerfile.py), `.dockerignore`,
`pyproject.toml` and deploy/base/deployment.yaml, whose pod must agree with the image (UID, port,
command). No Docker engine exists here, so the slow tests at the end do what the builder and final
stages do (tests/deploy/imageenv.py): build the wheel, install it into a fresh virtualenv that can
import only the image's packages, and run the console script.
"""

from __future__ import annotations

import subprocess
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import BASE, REPO
from tests.deploy.dockerfile import DockerfileError, Stage, parse
from tests.deploy.dockerignore import is_admitted, rules
from tests.deploy.imageenv import run_in_image

PYTHON_BASE = "python:3.11-slim"


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def container() -> dict[str, Any]:
    deployment = yaml.safe_load((BASE / "deployment.yaml").read_text())
    (controller,) = deployment["spec"]["template"]["spec"]["containers"]
    return controller


def runs(stage: Stage) -> list[str]:
    return [instruction.value for instruction in stage.all("RUN")]


def test_image_is_two_stages_on_python_3_11_slim(stages: list[Stage]) -> None:
    builder, final = stages
    assert builder.name == "builder" and final.name is None
    assert builder.base == final.base == PYTHON_BASE


def test_builder_builds_wheels_from_the_package_sources_only(stages: list[Stage]) -> None:
    builder = stages[0]
    copied = [word for copy in builder.all("COPY") for word in copy.words()[:-1]]
    assert sorted(copied) == ["README.md", "app", "podspec", "pyproject.toml"]
    assert any(run.startswith("pip wheel --wheel-dir /wheels") for run in runs(builder))


def test_final_stage_installs_the_wheels_offline_without_keeping_them(stages: list[Stage]) -> None:
    final = stages[1]
    assert not final.all("COPY") and not final.all("ADD"), "sources or wheels would become a layer"
    (install,) = [run for run in final.all("RUN") if "pip install" in run.value]
    assert install.flags["mount"] == ["type=bind,from=builder,source=/wheels,target=/wheels"]
    words = install.words()
    assert {"--no-index", "--no-cache-dir", "--find-links=/wheels", "buildkite-controller"} <= set(words)


def test_final_stage_has_no_build_tools(stages: list[Stage]) -> None:
    final_runs = " ".join(runs(stages[1]))
    assert "pip uninstall --yes" in final_runs
    uninstall = final_runs.split("pip uninstall --yes", 1)[1].split("&&", 1)[0].split()
    assert {"pip", "setuptools", "wheel"} <= set(uninstall)
    assert not any(tool in final_runs for tool in ("apt-get", "gcc", "build-essential", "pip wheel"))


def test_final_stage_runs_as_the_fixed_non_root_uid_of_the_deployment(
    stages: list[Stage], container: dict[str, Any]
) -> None:
    (user,) = stages[1].all("USER")
    uid, _, gid = user.value.partition(":")
    # Numeric, or the kubelet cannot verify runAsNonRoot.
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0
    assert (int(uid), int(gid)) == (container["securityContext"]["runAsUser"], 10001)
    assert "useradd --system --uid 10001 --gid 10001" in " ".join(runs(stages[1]))


def test_environment_keeps_every_write_inside_tmp(stages: list[Stage], container: dict[str, Any]) -> None:
    env = stages[1].env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == env["TMPDIR"] == "/tmp"
    writable = [mount["mountPath"] for mount in container["volumeMounts"] if not mount.get("readOnly")]
    assert writable == ["/tmp"] and container["securityContext"]["readOnlyRootFilesystem"] is True


def test_entrypoint_is_the_console_script_and_serve_is_the_default(
    stages: list[Stage], container: dict[str, Any]
) -> None:
    (entrypoint,) = stages[1].all("ENTRYPOINT")
    (cmd,) = stages[1].all("CMD")
    # Exec form: the controller itself is PID 1 and gets SIGTERM to drain and release its lease.
    assert entrypoint.exec_form() == ["buildkite-controller"] and cmd.exec_form() == ["serve"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["buildkite-controller"] == "app.cli:main"
    assert container["args"][0] == "serve" and "command" not in container


def test_exposed_port_is_the_deployment_http_port(stages: list[Stage], container: dict[str, Any]) -> None:
    (expose,) = stages[1].all("EXPOSE")
    assert expose.words() == ["8080"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", 8080)]


def test_dockerignore_admits_exactly_the_builder_inputs() -> None:
    parsed = rules((REPO / ".dockerignore").read_text())
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    admitted = {path for path in tracked if is_admitted(path, parsed)}
    assert admitted == {
        path
        for path in tracked
        if path in {"pyproject.toml", "README.md"} or path.startswith(("app/", "podspec/"))
    }
    for junk in (
        ".venv/bin/python",
        ".git/HEAD",
        "app/__pycache__/cli.cpython-311.pyc",
        "x.egg-info/PKG-INFO",
    ):
        assert not is_admitted(junk, parsed), junk


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("RUN echo\n", "only ARG may come before the first FROM", id="run-before-from"),
        pytest.param("FROM a\nFETCH b\n", "unknown instruction 'FETCH'", id="unknown-instruction"),
        pytest.param("FROM a\nRUN <<EOF\necho\nEOF\n", "heredocs are not supported", id="heredoc"),
        pytest.param("FROM a\nRUN echo \\\n", "continuation runs past the end", id="dangling-continuation"),
        pytest.param("FROM a b c d\n", "FROM must be", id="bad-from"),
        pytest.param("# just a comment\n", "no FROM instruction", id="empty"),
    ],
)
def test_dockerfile_reader_refuses_what_it_does_not_understand(text: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        parse(text)


def test_dockerfile_reader_joins_continuations_and_resolves_global_args() -> None:
    text = "# syntax=docker/dockerfile:1\nARG BASE=img:1\nFROM ${BASE} AS b\n# note\n"
    text += "RUN --mount=type=x a \\\n  b\n"
    (stage,) = parse(text)
    assert (stage.base, stage.name) == ("img:1", "b")
    (run,) = stage.all("RUN")
    assert (run.flags, run.value, run.line) == ({"mount": ["type=x"]}, "a b", 5)


@pytest.mark.slow
def test_wheel_holds_the_two_packages_and_no_tests(image: tuple[Path, Path]) -> None:
    wheel, _ = image
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"app", "podspec"}


@pytest.mark.slow
def test_console_script_of_the_installed_wheel_runs(image: tuple[Path, Path], tmp_path: Path) -> None:
    _, venv = image
    result = run_in_image(venv, tmp_path, str(venv / "bin" / "buildkite-controller"), "--help")
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout


@pytest.mark.slow
def test_serve_imports_only_what_the_image_installs(image: tuple[Path, Path], tmp_path: Path) -> None:
    _, venv = image
    code = "import app.cli.serve, app.main, podspec; print(app.cli.serve.__file__, podspec.__file__)"
    result = run_in_image(venv, tmp_path, str(venv / "bin" / "python"), "-c", code)
    assert result.returncode == 0, result.stderr
    assert all(Path(path).is_relative_to(venv) for path in result.stdout.split()), result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("module", ["pytest", "kubernetes_validate", "pip", "setuptools"])
def test_image_environment_lacks_dev_and_build_packages(
    image: tuple[Path, Path], tmp_path: Path, module: str
) -> None:
    _, venv = image
    result = run_in_image(venv, tmp_path, str(venv / "bin" / "python"), "-c", f"import {module}")
    assert result.returncode == 1 and "not in the container image" in result.stderr
