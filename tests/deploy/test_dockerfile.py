"""The Dockerfile and .dockerignore: a small, non-root, read-only-friendly image of the wheel.

Input: the repository's `Dockerfile`, read by BuildKit's own parser (the `dockerfile` package wraps it),
`.dockerignore`, matched by the Docker SDK's build-context filter (`docker.utils.build.exclude_paths`),
`pyproject.toml`, and deploy/base/controller/deployment.yaml, whose pod must agree with the image (UID,
ports, command). No Docker engine exists here, so the slow tests at the end do what the builder and final
stages do (tests/deploy/imageenv.py): build the wheel, install it into a fresh virtualenv that can import
only the image's packages, and run the console script.
"""

from __future__ import annotations

import subprocess
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml
from docker.utils.build import exclude_paths

from tests.deploy.conftest import BASE, REPO
from tests.deploy.imageenv import run_in_image

PYTHON_BASE = "python:3.11-slim"


@dataclass(frozen=True)
class Stage:
    """The instructions from one FROM to the next, as BuildKit's parser returned them."""

    base: str
    name: str | None
    commands: tuple[dockerfile.Command, ...]

    def all(self, instruction: str) -> list[dockerfile.Command]:
        return [command for command in self.commands if command.cmd == instruction.upper()]


def stages_of(commands: tuple[dockerfile.Command, ...]) -> list[Stage]:
    """Group the parsed instructions by stage, with global ARG defaults substituted into FROM."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[dockerfile.Command] = []
    head: tuple[str, str | None] | None = None
    for command in commands:
        if command.cmd == "FROM":
            if head is not None:
                stages.append(Stage(*head, tuple(current)))
            image, *rest = command.value
            for key, value in args.items():
                image = image.replace("${" + key + "}", value)
            head, current = (image, rest[1] if len(rest) == 2 and rest[0].upper() == "AS" else None), []
        elif head is None and command.cmd == "ARG":
            key, _, value = command.value[0].partition("=")
            args[key] = value
        else:
            current.append(command)
    assert head is not None, "no FROM"
    stages.append(Stage(*head, tuple(current)))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return stages_of(dockerfile.parse_file(str(REPO / "Dockerfile")))


@pytest.fixture(scope="module")
def container() -> dict[str, Any]:
    deployment = yaml.safe_load((BASE / "controller" / "deployment.yaml").read_text())
    (controller,) = deployment["spec"]["template"]["spec"]["containers"]
    return controller


def runs(stage: Stage) -> list[str]:
    return [" ".join(command.value[0].split()) for command in stage.all("RUN")]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in stage.all("ENV"):
        env.update(zip(command.value[::2], command.value[1::2], strict=True))
    return env


def test_image_is_two_stages_on_python_3_11_slim(stages: list[Stage]) -> None:
    builder, final = stages
    assert builder.name == "builder" and final.name is None
    assert builder.base == final.base == PYTHON_BASE


def test_builder_builds_wheels_from_the_package_sources_only(stages: list[Stage]) -> None:
    builder = stages[0]
    copied = [word for copy in builder.all("COPY") for word in copy.value[:-1]]
    assert sorted(copied) == ["README.md", "app", "podspec", "pyproject.toml"]
    assert any(run.startswith("pip wheel --wheel-dir /wheels") for run in runs(builder))


def test_final_stage_installs_the_wheels_offline_without_keeping_them(stages: list[Stage]) -> None:
    final = stages[1]
    assert not final.all("COPY") and not final.all("ADD"), "sources or wheels would become a layer"
    (install,) = [command for command in final.all("RUN") if "pip install" in command.value[0]]
    assert install.flags == ("--mount=type=bind,from=builder,source=/wheels,target=/wheels",)
    words = install.value[0].split("&&")[0].split()
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
    uid, _, gid = user.value[0].partition(":")
    # Numeric, or the kubelet cannot verify runAsNonRoot.
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0
    assert (int(uid), int(gid)) == (container["securityContext"]["runAsUser"], 10001)
    assert "useradd --system --uid 10001 --gid 10001" in " ".join(runs(stages[1]))


def test_environment_keeps_every_write_inside_tmp(stages: list[Stage], container: dict[str, Any]) -> None:
    env = env_of(stages[1])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == env["TMPDIR"] == "/tmp"
    writable = [mount["mountPath"] for mount in container["volumeMounts"] if not mount.get("readOnly")]
    assert writable == ["/tmp"] and container["securityContext"]["readOnlyRootFilesystem"] is True


def test_entrypoint_is_the_console_script_and_serve_is_the_default(
    stages: list[Stage], container: dict[str, Any]
) -> None:
    (entrypoint,) = stages[1].all("ENTRYPOINT")
    (cmd,) = stages[1].all("CMD")
    # Exec form (JSON): the controller itself is PID 1 and gets SIGTERM to drain and release its lease.
    assert entrypoint.json and entrypoint.value == ("buildkite-controller",)
    assert cmd.json and cmd.value == ("serve",)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["buildkite-controller"] == "app.cli:main"
    assert container["args"][0] == "serve" and "command" not in container


def test_exposed_ports_are_the_deployment_ports(stages: list[Stage], container: dict[str, Any]) -> None:
    (expose,) = stages[1].all("EXPOSE")
    assert sorted(int(port) for port in expose.value) == sorted(
        p["containerPort"] for p in container["ports"]
    )


def build_context(root: Path, paths: list[str]) -> set[str]:
    """What `docker build` would send from a tree holding ``paths``, filtered by our .dockerignore."""
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).touch()
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {path for path in exclude_paths(str(root), patterns) if (root / path).is_file()}


def test_dockerignore_admits_exactly_the_builder_inputs(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    junk = [".venv/bin/python", ".git/HEAD", "app/__pycache__/cli.cpython-311.pyc", "x.egg-info/PKG-INFO"]
    sent = build_context(tmp_path, tracked + junk)
    # Docker always sends the Dockerfile and .dockerignore (it needs them); COPY never sees them.
    assert sent - {"Dockerfile", ".dockerignore"} == {
        path
        for path in tracked
        if path in {"pyproject.toml", "README.md"} or path.startswith(("app/", "podspec/"))
    }


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
