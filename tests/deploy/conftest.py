"""Fixtures for the deploy tests: deploy/ rendered by the real `kubectl kustomize`, and the image's stand-in.

`overlay_objects` is what `kubectl apply -k deploy/overlays/example` would send; `base_objects` is the
base alone. Each test gets its own deep copy, so a test may mutate what it is given. `image` is
(the built wheel, a fresh virtualenv holding it and only the runtime dependencies): see imageenv.py.
`tool` finds a binary the tests need: locally a missing one skips them, in CI (CI=true) it fails them.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.imageenv import build_wheel, image_venv

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "example"
SECRET_EXAMPLE = BASE / "secret.example.yaml"
Obj = dict[str, Any]


def pytest_configure(config: pytest.Config) -> None:
    # Registered here because pyproject.toml belongs to the lead; CI runs these (no -m filter there).
    config.addinivalue_line("markers", "slow: builds and installs the wheel (tens of seconds)")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def tool(name: str, path: str | None = None) -> str:
    """The binary's path; without it, skip locally and fail in CI (a missing tool must not pass CI)."""
    found = path if path and Path(path).is_file() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed ({path or 'not on PATH'})"
        if in_ci():
            pytest.fail(f"{message}: CI must run this test", pytrace=False)
        pytest.skip(message)
    return found


def kustomize(directory: Path) -> list[Obj]:
    """`kubectl kustomize <directory>`: exactly what `kubectl apply -k` would send."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def _rendered() -> dict[str, list[Obj]]:
    return {"overlay": kustomize(OVERLAY), "base": kustomize(BASE)}


@pytest.fixture
def overlay_objects(_rendered: dict[str, list[Obj]]) -> list[Obj]:
    return copy.deepcopy(_rendered["overlay"])


@pytest.fixture
def base_objects(_rendered: dict[str, list[Obj]]) -> list[Obj]:
    return copy.deepcopy(_rendered["base"])


def secret_examples() -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(SECRET_EXAMPLE.read_text()) if doc]


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("image")
    wheel = build_wheel(REPO, tmp)
    return wheel, image_venv(REPO, tmp, wheel)
