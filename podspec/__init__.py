"""Pure pod builder: a confirmed Buildkite job + the controller's pod config → a Pod manifest.

No I/O and no import of ``app``. Entry points::

    pod_template_name(job)                         # which PodTemplate to fetch first, if any
    build(job, config=PodConfig(...), pod_template_spec=None, strict=False) -> BuiltPod

``BuildError(field, message)`` means the job cannot get a pod; its message is meant for the job log.
"""

from __future__ import annotations

from podspec.build import BuiltPod, build, pod_template_name
from podspec.config import AgentConfig, PodConfig, ResourceClass
from podspec.errors import BuildError
from podspec.interposer import interpose, shell_quote
from podspec.job import KUBERNETES_PLUGIN_KEY, Job, parse_agent_query_rules
from podspec.params import CheckoutParams, CommandParams, Metadata, SidecarParams
from podspec.plugin import KubernetesPlugin, PluginParse, parse_plugins

__all__ = [
    "KUBERNETES_PLUGIN_KEY",
    "AgentConfig",
    "BuildError",
    "BuiltPod",
    "CheckoutParams",
    "CommandParams",
    "Job",
    "KubernetesPlugin",
    "Metadata",
    "PluginParse",
    "PodConfig",
    "ResourceClass",
    "SidecarParams",
    "build",
    "interpose",
    "parse_agent_query_rules",
    "parse_plugins",
    "pod_template_name",
    "shell_quote",
]
