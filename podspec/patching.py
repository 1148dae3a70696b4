"""Applying the controller ``pod-spec-patch`` and the plugin ``podSpecPatch`` (reference §4.8).

A patch is a strategic-merge patch over the PodSpec the builder has made so far. The command and
args of the containers the controller owns are part of the contract with buildkite-agent, so:

* ``agent``, ``checkout``, ``copy-agent`` and ``imagecheck-*``: changing ``command``/``args`` is an
  error unless ``allow-pod-spec-patch-unsafe-command-modification`` is set;
* an existing command container (tini + ``kubernetes-bootstrap``): the new command/args are
  interposed into its ``BUILDKITE_COMMAND`` and tini stays, so a patch can change what a step runs;
* any other container (new ones, user init containers, sidecars): taken as written.
"""

from __future__ import annotations

from typing import Any

from podspec.errors import BuildError
from podspec.gojson import Decoder, join
from podspec.interposer import interpose
from podspec.merge import strategic_merge
from podspec.metadata import check_spec_metadata
from podspec.params import k8s_table

TINI = "/workspace/tini-static"
BOOTSTRAP_ARGS = ("--", "/workspace/buildkite-agent", "kubernetes-bootstrap")
STACK_CONTAINERS = frozenset({"agent", "checkout", "copy-agent"})
_PATCHED_LISTS = ("initContainers", "containers")


def is_command_container(container: dict[str, Any]) -> bool:
    return container.get("command") == [TINI] and container.get("args") == list(BOOTSTRAP_ARGS)


def is_stack_container(name: object) -> bool:
    return isinstance(name, str) and (name in STACK_CONTAINERS or name.startswith("imagecheck-"))


def decode_patch(value: Any, *, path: str, strict: bool) -> dict[str, Any]:
    """Type-check a PodSpec patch, keeping strategic-merge directives (``$patch`` …)."""
    check_spec_metadata(value, field=path or "pod-spec-patch")
    decoder = Decoder(k8s_table(), strict=strict, allow_directives=True)
    patch: dict[str, Any] = decoder.decode(value, ["ref", "PodSpec"], path)  # a PodSpec decodes to a map
    return patch


def check_controller_patch(patch: dict[str, Any], *, allow_commands: bool) -> None:
    """Start-up checks on ``pod-spec-patch``: lower-case images, and no command/args unless allowed."""
    for list_name, index, container in _patch_containers(patch):
        path = f"pod-spec-patch.{list_name}[{index}]."
        image = container.get("image")
        if isinstance(image, str) and image != image.lower():
            raise BuildError(path + "image", f"image references must be lower-case (got {image!r})")
        if not allow_commands and ("command" in container or "args" in container):
            raise BuildError(
                path + "command",
                "changing container commands or args via pod-spec-patch is not supported; "
                "set allow-pod-spec-patch-unsafe-command-modification to allow it",
            )


def apply_patch(
    spec: dict[str, Any],
    patch: dict[str, Any],
    *,
    field: str,
    step_command: str,
    interposer: str | None,
    allow_unsafe: bool,
) -> dict[str, Any]:
    """``spec`` with ``patch`` merged in, after the command-protection rules above."""
    commands = {c.get("name") for c in spec.get("containers", []) if is_command_container(c)}
    guarded = dict(patch)
    for list_name in _PATCHED_LISTS:
        if isinstance(patch.get(list_name), list):
            guarded[list_name] = [
                _guard(
                    c,
                    path=join(join(field, list_name), i),
                    commands=commands,
                    allow_unsafe=allow_unsafe,
                    step_command=step_command,
                    interposer=interposer,
                )
                for i, c in enumerate(patch[list_name])
            ]
    return strategic_merge(spec, guarded, type_name="PodSpec", path=field)


def _guard(
    container: Any,
    *,
    path: str,
    commands: set[Any],
    allow_unsafe: bool,
    step_command: str,
    interposer: str | None,
) -> Any:
    if not isinstance(container, dict) or ("command" not in container and "args" not in container):
        return container
    name = container.get("name")
    if name in commands:
        return _reinterpose(container, step_command=step_command, interposer=interposer)
    if is_stack_container(name) and not allow_unsafe:
        raise BuildError(
            join(path, "command"),
            f"modifying the command or args of container {name!r} via a pod spec patch is not supported",
        )
    return container


def _reinterpose(container: dict[str, Any], *, step_command: str, interposer: str | None) -> dict[str, Any]:
    command = interpose(
        container.get("command") or [],
        container.get("args") or [],
        interposer=interposer,
        step_command=step_command,
    )
    patched = {k: v for k, v in container.items() if k not in ("command", "args")}
    env = [e for e in patched.get("env") or [] if e.get("name") != "BUILDKITE_COMMAND"]
    patched["env"] = [*env, {"name": "BUILDKITE_COMMAND", "value": command}]
    return patched


def _patch_containers(patch: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    found = []
    for list_name in _PATCHED_LISTS:
        for index, container in enumerate(patch.get(list_name) or []):
            if isinstance(container, dict):
                found.append((list_name, index, container))
    return found
