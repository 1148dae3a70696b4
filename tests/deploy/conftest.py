"""Fixtures for the deploy tests: deploy/ rendered as kustomize would, and the image's stand-in.

`overlay_objects` is what `kubectl apply -k deploy/overlays/example` would send; `base_objects` is the
base alone. Each test gets its own deep copy, so a test may mutate what it is given. `image` is
(the built wheel, a fresh virtualenv holding it and only the runtime dependencies): see imageenv.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.imageenv import build_wheel, image_venv
from tests.deploy.kustomize import render

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "example"
SECRET_EXAMPLE = BASE / "secret.example.yaml"


def pytest_configure(config: pytest.Config) -> None:
    # Registered here because pyproject.toml belongs to the lead; CI runs these (no -m filter there).
    config.addinivalue_line("markers", "slow: builds and installs the wheel (tens of seconds)")


@pytest.fixture(scope="session")
def _rendered() -> dict[str, list[dict[str, Any]]]:
    return {"overlay": render(OVERLAY), "base": render(BASE)}


@pytest.fixture
def overlay_objects(_rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return copy.deepcopy(_rendered["overlay"])


@pytest.fixture
def base_objects(_rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return copy.deepcopy(_rendered["base"])


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("image")
    wheel = build_wheel(REPO, tmp)
    return wheel, image_venv(REPO, tmp, wheel)
