"""The layering the layout promises, checked on the source: a newcomer can trust the folders.

- ``podspec/`` is pure: it imports nothing from ``app`` and nothing that does I/O.
- ``app/kube.py`` is the only service module that imports ``kubernetes``.
- The service never imports the fakes in ``app/simulate/``; only the CLI registers the `simulate` command.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_MODULES = {"app", "httpx", "kubernetes", "aiohttp", "fastapi", "uvicorn", "socket", "subprocess", "urllib"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names and full dotted names of every import in ``path``, wherever it stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("podspec"), ids=lambda p: str(p.relative_to(ROOT)))
def test_podspec_is_pure(path: Path) -> None:
    offending = {name for name in imported_modules(path) if name.split(".")[0] in IO_MODULES}
    assert not offending, f"{path.name} imports {sorted(offending)}"


SERVICE = [p for p in python_files("app") if "simulate" not in p.parts]
# The CLI registers `simulate` (imported lazily), and `lint` borrows the apiserver checks when the
# optional `simulate` extra is installed; `serve` and the stages never touch the fakes.
ALLOWED_FAKES = {
    "app/cli/__init__.py": {"app.simulate.cli"},
    "app/cli/render.py": {"app.simulate.kube_validation"},
    # `demo` runs the fakes beside the real controller (a `serve` child process), as `simulate` does.
    "app/cli/demo.py": {"app.simulate.webhook_payloads"},
    "app/cli/demo_stack.py": {
        "app.simulate.agents",
        "app.simulate.buildkite_server",
        "app.simulate.kubelet",
        "app.simulate.kubelet_script",
        "app.simulate.process",
        "app.simulate.stack",
        "app.simulate.webhook_sender",
    },
    "app/cli/demo_jobs.py": {"app.simulate.buildkite_server"},  # a type annotation only
}


@pytest.mark.parametrize("path", SERVICE, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_gateway_imports_kubernetes(path: Path) -> None:
    uses = {name for name in imported_modules(path) if name.split(".")[0] == "kubernetes"}
    assert not uses or path == ROOT / "app" / "kube.py", f"{path.name} imports {sorted(uses)}"


@pytest.mark.parametrize("path", SERVICE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_service_never_imports_the_fakes(path: Path) -> None:
    fakes = {name for name in imported_modules(path) if name.startswith("app.simulate")}
    allowed = ALLOWED_FAKES.get(path.relative_to(ROOT).as_posix(), set())
    assert fakes <= allowed, f"{path.name} imports {sorted(fakes - allowed)}"


def test_the_checks_see_the_code() -> None:
    # Guard against a refactor that silently leaves these tests with nothing to check.
    assert len(python_files("podspec")) > 10 and len(SERVICE) > 20
    assert "kubernetes.aio" in " ".join(imported_modules(ROOT / "app" / "kube.py"))
