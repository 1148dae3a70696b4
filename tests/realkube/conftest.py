"""Fixtures for tests against a real kube-apiserver (``tests/realkube/controlplane.py``).

One control plane per test process, started on first use and stopped at the end of the session. Under
``pytest -n 2`` each xdist worker starts its own: the pair costs about a second of CPU and ~250 MB idle, far
less than the lock, state file and reference counting a shared instance needs to know when to stop, and
a worker's etcd compaction (``compact()``) or namespace labels can then never disturb the other worker's
tests. Tests share their worker's control plane but not namespaces: each asks for a fresh one.

In CI (``CI=true``, or ``BKC_REALKUBE_REQUIRED=1``) a missing binary fails every test here; locally it
skips them with the command that builds the binaries.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realkube import deploy_rbac
from tests.realkube.controlplane import (
    BUILD_SCRIPT,
    ControlPlane,
    ControlPlaneError,
    binaries_dir,
    missing_binaries,
    required_in_this_run,
)
from tests.realkube.deploy_rbac import ControllerRBAC

_names = itertools.count(1)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver on loopback for this test process."""
    try:
        directory = binaries_dir()
    except ControlPlaneError as exc:
        if required_in_this_run():
            pytest.fail(f"realkube: {exc}", pytrace=False)
        pytest.skip(f"realkube: {exc}")
    missing = missing_binaries(directory)
    if missing:
        why = f"realkube: {', '.join(missing)} not built in {directory}; build with: bash {BUILD_SCRIPT}"
        if required_in_this_run():
            pytest.fail(why + " (CI must run this tier: failing instead of skipping)", pytrace=False)
        pytest.skip(why)
    with ControlPlane(directory) as plane:
        yield plane


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    """A fresh namespace (with its ``default`` ServiceAccount) for one test."""
    name = f"t-{os.environ.get('PYTEST_XDIST_WORKER', 'gw')}-{os.getpid()}-{next(_names)}"
    control_plane.create_namespace(name)
    return name


@pytest.fixture(scope="session")
def controller_rbac(control_plane: ControlPlane) -> ControllerRBAC:
    """deploy/'s RBAC applied once per control plane; its ServiceAccount's kubeconfig in ``.credentials``."""
    return deploy_rbac.apply(control_plane)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A worker's first realkube test also starts the control plane (tens of seconds on a busy machine)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(300))
