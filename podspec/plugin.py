"""The ``kubernetes`` plugin of a pipeline step, read from the job's ``BUILDKITE_PLUGINS``.

Buildkite delivers a step's plugins as a JSON *string*: a list of single-key objects keyed by the
expanded plugin source (reference §3, buildkite-api.md "where the plugin config lives"). Only the
entry keyed ``KUBERNETES_PLUGIN_KEY`` concerns us; other plugins are the agent's business.

The value is untrusted pipeline input. It is decoded with Go's rules (``gojson``) so that pipelines
written for agent-stack-k8s keep working — case-insensitive keys, unknown keys dropped (reported as
warnings; errors when ``strict``) — and then validated by ``KubernetesPlugin``. Every failure is a
``BuildError`` whose field path starts at ``kubernetes`` (e.g. ``kubernetes.podSpec.containers[1].image``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError

from podspec.errors import BuildError
from podspec.gojson import Decoder, Spec, TypeTable, describe, join
from podspec.job import KUBERNETES_PLUGIN_KEY
from podspec.metadata import check_spec_metadata
from podspec.params import (
    CheckoutParams,
    CommandParams,
    EnvFromList,
    Metadata,
    MountList,
    ParamsModel,
    SidecarParams,
    k8s_table,
)

# Buildkite's own env values can exceed 100 KB; a pod object must stay under etcd's ~1.5 MB, so a
# plugin config larger than this can never become a pod.
MAX_PLUGINS_BYTES = 1024 * 1024
ROOT = "kubernetes"
POD_SPEC: Spec = ["ref", "PodSpec"]


class KubernetesPlugin(ParamsModel):
    """The plugin's fields (reference §3.1). Kubernetes-typed values stay canonical dicts."""

    pod_spec: dict[str, Any] | None = Field(None, alias="podSpec")
    pod_spec_patch: dict[str, Any] | None = Field(None, alias="podSpecPatch")
    pod_template: str | None = Field(None, alias="podTemplate")
    git_env_from: EnvFromList = Field(default_factory=list, alias="gitEnvFrom")
    sidecars: list[dict[str, Any]] = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=Metadata)
    extra_volume_mounts: MountList = Field(default_factory=list, alias="extraVolumeMounts")
    checkout: CheckoutParams = Field(default_factory=CheckoutParams)
    command_params: CommandParams = Field(default_factory=CommandParams, alias="commandParams")
    sidecar_params: SidecarParams = Field(default_factory=SidecarParams, alias="sidecarParams")
    job_active_deadline_seconds: int | None = Field(None, alias="jobActiveDeadlineSeconds", ge=0)


PLUGIN_TYPES: dict[str, dict[str, Spec]] = {
    "KubernetesPlugin": {
        "podSpec": POD_SPEC,
        "podSpecPatch": "patch",
        "podTemplate": "string",
        "gitEnvFrom": ["list", ["ref", "EnvFromSource"]],
        "sidecars": ["list", ["ref", "Container"]],
        "metadata": ["ref", "Metadata"],
        "extraVolumeMounts": ["list", ["ref", "VolumeMount"]],
        "checkout": ["ref", "CheckoutParams"],
        "commandParams": ["ref", "CommandParams"],
        "sidecarParams": ["ref", "SidecarParams"],
        "jobActiveDeadlineSeconds": "integer",
    }
}


@dataclass(frozen=True, slots=True)
class PluginParse:
    """``plugin`` is None when the step has no kubernetes plugin."""

    plugin: KubernetesPlugin | None
    warnings: tuple[str, ...] = ()


def parse_plugins(raw: str | None, *, strict: bool = False) -> PluginParse:
    """Find and decode the kubernetes plugin in a ``BUILDKITE_PLUGINS`` value."""
    if not raw:
        return PluginParse(None)
    config = _find_kubernetes_entry(_load_list(raw))
    if config is None:
        return PluginParse(None)
    return decode_plugin(config, strict=strict)


def decode_plugin(config: Any, *, strict: bool = False) -> PluginParse:
    """Decode the value of the kubernetes plugin entry (already parsed from JSON)."""
    if config is None:  # `- kubernetes: ~` in YAML: the plugin with every default
        config = {}
    decoder = PatchAwareDecoder(strict=strict)
    canonical = decoder.decode(config, ["ref", "KubernetesPlugin"], ROOT)
    try:
        plugin = KubernetesPlugin.model_validate(canonical, context={"decoded": True})
    except ValidationError as exc:
        raise _build_error(exc) from None
    return PluginParse(plugin, tuple(decoder.warnings))


class PatchAwareDecoder(Decoder):
    """Decodes the plugin; ``podSpecPatch`` is a PodSpec that may carry strategic-merge directives."""

    def __init__(self, *, strict: bool) -> None:
        super().__init__(_plugin_table(), strict=strict)

    def decode(self, value: Any, spec: Spec, path: str) -> Any:
        if spec in ("patch", POD_SPEC):
            check_spec_metadata(value, field=path)
        if spec != "patch":
            return super().decode(value, spec, path)
        self.allow_directives = True
        try:
            return super().decode(value, POD_SPEC, path)
        finally:
            self.allow_directives = False


@functools.cache
def _plugin_table() -> TypeTable:
    return TypeTable({**k8s_table(), **PLUGIN_TYPES})


def _load_list(raw: str) -> list[Any]:
    if len(raw) > MAX_PLUGINS_BYTES:
        raise BuildError("BUILDKITE_PLUGINS", f"is {len(raw)} bytes; the limit is {MAX_PLUGINS_BYTES}")
    try:
        entries = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BuildError("BUILDKITE_PLUGINS", f"is not valid JSON ({_short_reason(exc)})") from None
    if not isinstance(entries, list):
        raise BuildError("BUILDKITE_PLUGINS", f"must be a JSON list of plugins (got {describe(entries)})")
    return entries


def _find_kubernetes_entry(entries: list[Any]) -> Any:
    found: Any = None
    for index, entry in enumerate(entries):
        path = join("BUILDKITE_PLUGINS", index)
        if not isinstance(entry, dict) or len(entry) != 1:
            raise BuildError(
                path, f"each plugin must be an object with exactly one key (got {describe(entry)})"
            )
        ((source, config),) = entry.items()
        if source == KUBERNETES_PLUGIN_KEY:
            found = {} if config is None else config
    return found


def _short_reason(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]


def _build_error(exc: ValidationError) -> BuildError:
    error = exc.errors()[0]
    path = ROOT
    for part in error["loc"]:
        path = join(path, part)
    return BuildError(path, error["msg"])
