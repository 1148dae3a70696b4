"""The effective settings for one job: controller defaults combined with the job's plugin.

The rules (reference §3.2-§3.3): scalar checkout settings from the plugin override the controller's
``default-checkout-params`` field by field (``gitMirrors`` too, one field at a time); the plugin's
``gitCredentialsSecret`` replaces the default one; ``envFrom`` and volume-mount lists accumulate,
defaults first; a non-empty plugin ``interposer`` beats the default one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from podspec.config import PodConfig
from podspec.job import Job
from podspec.params import CheckoutParams, GitMirrors
from podspec.plugin import KubernetesPlugin
from podspec.scripts import WORKSPACE, RunAs

DEFAULT_GIT_MIRRORS_PATH = "/buildkite/git-mirrors"


@dataclass(frozen=True, slots=True)
class Inputs:
    job: Job
    config: PodConfig
    plugin: KubernetesPlugin
    checkout: CheckoutParams
    interposer: str
    run_as: RunAs | None
    termination_grace_period_seconds: int

    @property
    def workspace_mount(self) -> dict[str, Any]:
        volume = self.config.workspace_volume or {"name": "workspace"}
        mount = {"name": volume["name"], "mountPath": WORKSPACE}
        if self.config.workspace_mount_sub_path_expr:
            mount["subPathExpr"] = self.config.workspace_mount_sub_path_expr
        return mount

    @property
    def command_env_from(self) -> list[dict[str, Any]]:
        return [*self.config.default_command_params.env_from, *self.plugin.command_params.env_from]

    @property
    def command_mounts(self) -> list[dict[str, Any]]:
        defaults = self.config.default_command_params.extra_volume_mounts
        return [*defaults, *self.plugin.command_params.extra_volume_mounts]

    @property
    def sidecar_env_from(self) -> list[dict[str, Any]]:
        return [*self.config.default_sidecar_params.env_from, *self.plugin.sidecar_params.env_from]

    @property
    def sidecar_mounts(self) -> list[dict[str, Any]]:
        defaults = self.config.default_sidecar_params.extra_volume_mounts
        return [*defaults, *self.plugin.sidecar_params.extra_volume_mounts]

    @property
    def git_mirrors_path(self) -> str | None:
        mirrors = self.checkout.git_mirrors
        if mirrors is None:
            return None
        return mirrors.path or (DEFAULT_GIT_MIRRORS_PATH if mirrors.volume else None)


def make_inputs(job: Job, *, config: PodConfig, plugin: KubernetesPlugin, spec: dict[str, Any]) -> Inputs:
    interposer = plugin.command_params.interposer or config.default_command_params.interposer or "buildkite"
    tgps = spec.get("terminationGracePeriodSeconds", config.default_termination_grace_period_seconds)
    return Inputs(
        job=job,
        config=config,
        plugin=plugin,
        checkout=merge_checkout(config.default_checkout_params, plugin.checkout),
        interposer=interposer,
        run_as=run_as(spec),
        termination_grace_period_seconds=tgps,
    )


def run_as(spec: dict[str, Any]) -> RunAs | None:
    context = spec.get("securityContext") or {}
    uid = context.get("runAsUser")
    return RunAs(uid, context.get("runAsGroup")) if uid else None


def merge_checkout(default: CheckoutParams, plugin: CheckoutParams) -> CheckoutParams:
    merged = _overlay(default, plugin, skip=("env_from", "extra_volume_mounts", "git_mirrors"))
    merged["env_from"] = [*default.env_from, *plugin.env_from]
    merged["extra_volume_mounts"] = [*default.extra_volume_mounts, *plugin.extra_volume_mounts]
    if default.git_mirrors and plugin.git_mirrors:
        merged["git_mirrors"] = GitMirrors.model_construct(
            **_overlay(default.git_mirrors, plugin.git_mirrors)
        )
    else:
        merged["git_mirrors"] = plugin.git_mirrors or default.git_mirrors
    return CheckoutParams.model_construct(**merged)


def _overlay(base: Any, top: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Field-wise: ``top``'s value where it is set (not None), else ``base``'s."""
    out = {}
    for name in type(base).model_fields:
        if name not in skip:
            value = getattr(top, name)
            out[name] = getattr(base, name) if value is None else value
    return out
