"""Stands in for the container image where no Docker engine exists: the wheel in a fresh virtualenv.

Input: the repository's package sources and the test run's own environment. `build_wheel` does what the
Dockerfile's builder stage does (`pip wheel --no-deps` on a copy of the sources). `image_venv` installs
that wheel alone into a new virtualenv and borrows the dependencies from this environment, without
downloading anything, but only those the image would hold: the import closure of pyproject's runtime
`dependencies`. Every other installed distribution (the dev and simulate extras, pip, setuptools) is
blocked at import time, because the final image does not have it either.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
BLOCKER = '''"""Lets this virtualenv import only what the container image holds (see imageenv.py)."""
import sys

BLOCKED = {blocked!r}


class _NotInImage:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the container image)", name=name)
        return None


sys.meta_path.insert(0, _NotInImage)
'''


def build_wheel(repo: Path, tmp: Path) -> Path:
    """`pip wheel --no-deps` on a copy of the sources the builder stage copies; returns the wheel."""
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    for package in ("app", "podspec"):
        shutil.copytree(repo / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    _pip("wheel", "--no-deps", "--wheel-dir", str(tmp / "dist"), str(source))
    (wheel,) = (tmp / "dist").glob("buildkite_controller-*.whl")
    return wheel


def _pip(*args: str) -> None:
    # Output only on failure: setuptools' deprecation chatter would bury the test report otherwise.
    result = subprocess.run([*PIP, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(repo: Path) -> set[str]:
    """Normalised names of pyproject's runtime dependencies and everything they require, extras aside."""
    roots = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    pending = [Requirement(text) for text in roots]
    seen: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = _normal(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        pending.extend(Requirement(text) for text in metadata.requires(requirement.name) or [])
    return seen


def blocked_modules(repo: Path) -> set[str]:
    """Top-level modules installed here whose distributions the image would not hold."""
    allowed = runtime_closure(repo)
    return {
        module
        for module, distributions in metadata.packages_distributions().items()
        if module not in {"app", "podspec"} and not {_normal(d) for d in distributions} & allowed
    }


def image_venv(repo: Path, tmp: Path, wheel: Path) -> Path:
    """A new virtualenv with our wheel installed and only the image's dependencies importable."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], check=True
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "image_blocker.py").write_text(BLOCKER.format(blocked=sorted(blocked_modules(repo))))
    # A plain path line is appended after the venv's own site-packages, so `app` comes from the wheel;
    # the host directory's own .pth files (an editable install of this repo) are not processed.
    host = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site / "image_env.pth").write_text("\n".join([*host, "import image_blocker"]) + "\n")
    return venv


def image_environment(venv: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment as the image would see it: the venv first on PATH, nothing leaking in."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "PYTHONDONTWRITEBYTECODE": "1"}
    return env | dict(extra or {})


def run_in_image(venv: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` in the image stand-in, capturing its output."""
    env = image_environment(venv)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
