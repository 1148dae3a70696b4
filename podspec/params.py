"""Parameter blocks shared by the kubernetes plugin and the controller config.

agent-stack-k8s uses one schema for the plugin's ``checkout`` / ``commandParams`` / ``sidecarParams`` /
``metadata`` and the controller's ``default-checkout-params`` / ``default-command-params`` /
``default-sidecar-params`` / ``default-metadata`` (reference §3.2-§3.3), so both sides use these
models. Field aliases are the camelCase plugin keys. Kubernetes-typed values (``envFrom``, volume
mounts, volumes, secret sources) stay plain dicts; ``k8s_checked`` checks them against the Kubernetes
field table, so a bad controller file is refused naming the key.

``PARAM_TYPES`` describes the same shapes for ``gojson.Decoder``, which decodes pipeline input with
Go's rules before pydantic sees it.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from podspec.gojson import Decoder, Spec, TypeTable, load_table


@functools.cache
def k8s_table() -> TypeTable:
    """Kubernetes types plus the parameter blocks below, built once per process."""
    return TypeTable({**load_table(), **PARAM_TYPES})


def _check_k8s(spec: Spec, value: Any, info: ValidationInfo) -> Any:
    # Pipeline input was already decoded (leniently, with Go's rules) by the plugin parser.
    if info.context and info.context.get("decoded"):
        return value
    return Decoder(k8s_table(), strict=True).decode(value, spec, "")


def k8s_checked(type_name: str, *, many: bool = False) -> AfterValidator:
    """The check for a dict (or, with ``many``, a list of dicts) that must be a valid Kubernetes
    ``type_name``: ``Annotated[dict[str, Any], k8s_checked("Volume")]``, a type mypy can read."""
    spec: Spec = ["ref", type_name]
    if many:
        spec = ["list", spec]
    return AfterValidator(lambda v, info: _check_k8s(spec, v, info))


EnvFromList = Annotated[list[dict[str, Any]], k8s_checked("EnvFromSource", many=True)]
MountList = Annotated[list[dict[str, Any]], k8s_checked("VolumeMount", many=True)]
Volume = Annotated[dict[str, Any], k8s_checked("Volume")]
Interposer = Literal["buildkite", "vector", "legacy", ""]


class ParamsModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class GitMirrors(ParamsModel):
    path: str | None = None
    volume: Volume | None = None
    clone_flags: str | None = Field(None, alias="cloneFlags")
    lock_timeout: int | None = Field(None, alias="lockTimeout")
    skip_update: bool | None = Field(None, alias="skipUpdate")


class CheckoutParams(ParamsModel):
    """Plugin ``checkout`` / controller ``default-checkout-params`` (reference §3.2)."""

    skip: bool | None = None
    clone_flags: str | None = Field(None, alias="cloneFlags")
    fetch_flags: str | None = Field(None, alias="fetchFlags")
    checkout_flags: str | None = Field(None, alias="checkoutFlags")
    clean_flags: str | None = Field(None, alias="cleanFlags")
    no_submodules: bool | None = Field(None, alias="noSubmodules")
    submodule_clone_config: list[str] | None = Field(None, alias="submoduleCloneConfig")
    git_mirrors: GitMirrors | None = Field(None, alias="gitMirrors")
    git_credentials_secret: Annotated[dict[str, Any], k8s_checked("SecretVolumeSource")] | None = Field(
        None, alias="gitCredentialsSecret"
    )
    env_from: EnvFromList = Field(default_factory=list, alias="envFrom")
    extra_volume_mounts: MountList = Field(default_factory=list, alias="extraVolumeMounts")


class CommandParams(ParamsModel):
    """Plugin ``commandParams`` / controller ``default-command-params`` (reference §3.3)."""

    interposer: Interposer | None = None
    env_from: EnvFromList = Field(default_factory=list, alias="envFrom")
    extra_volume_mounts: MountList = Field(default_factory=list, alias="extraVolumeMounts")


class SidecarParams(ParamsModel):
    env_from: EnvFromList = Field(default_factory=list, alias="envFrom")
    extra_volume_mounts: MountList = Field(default_factory=list, alias="extraVolumeMounts")


class Metadata(ParamsModel):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


_ENV_FROM: Spec = ["list", ["ref", "EnvFromSource"]]
_MOUNTS: Spec = ["list", ["ref", "VolumeMount"]]
PARAM_TYPES: dict[str, dict[str, Spec]] = {
    "GitMirrors": {
        "path": "string",
        "volume": ["ref", "Volume"],
        "cloneFlags": "string",
        "lockTimeout": "integer",
        "skipUpdate": "boolean",
    },
    "CheckoutParams": {
        "skip": "boolean",
        "cloneFlags": "string",
        "fetchFlags": "string",
        "checkoutFlags": "string",
        "cleanFlags": "string",
        "noSubmodules": "boolean",
        "submoduleCloneConfig": ["list", "string"],
        "gitMirrors": ["ref", "GitMirrors"],
        "gitCredentialsSecret": ["ref", "SecretVolumeSource"],
        "envFrom": _ENV_FROM,
        "extraVolumeMounts": _MOUNTS,
    },
    "CommandParams": {
        "interposer": ["enum", ["buildkite", "vector", "legacy", ""]],
        "envFrom": _ENV_FROM,
        "extraVolumeMounts": _MOUNTS,
    },
    "SidecarParams": {"envFrom": _ENV_FROM, "extraVolumeMounts": _MOUNTS},
    "Metadata": {"labels": ["map", "string"], "annotations": ["map", "string"]},
}
