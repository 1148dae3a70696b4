"""Pod labels and annotations (reference §4.2).

Labels let the controller find its pods (``buildkite.com/job-uuid``, ``buildkite.com/controller-id``)
and let people select by agent tag (``tag.buildkite.com/<k>``). User metadata (``default-metadata``,
then the plugin's ``metadata``) goes in first so system keys always win — a pipeline cannot forge
another job's UUID or step key — except ``cluster-autoscaler.kubernetes.io/safe-to-evict``, which
defaults to ``"false"`` (evicting a CI pod kills the build) but stays overridable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from podspec.errors import BuildError
from podspec.job import Job

UUID_LABEL = "buildkite.com/job-uuid"
CONTROLLER_ID_LABEL = "buildkite.com/controller-id"
TAG_LABEL_PREFIX = "tag.buildkite.com/"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
POD_TEMPLATE_ANNOTATION = "buildkite.com/pod-template-name"
_ENV_ANNOTATIONS = (
    ("buildkite.com/build-url", "BUILDKITE_BUILD_URL"),
    ("buildkite.com/build-branch", "BUILDKITE_BRANCH"),
    ("buildkite.com/build-repo", "BUILDKITE_REPO"),
    ("buildkite.com/pipeline-slug", "BUILDKITE_PIPELINE_SLUG"),
    ("buildkite.com/step-key", "BUILDKITE_STEP_KEY"),
)
_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns_subdomain(name: str) -> bool:
    return len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) is not None


def is_qualified_name(key: str) -> bool:
    """A label or annotation key: ``[prefix/]name`` (prefix a DNS subdomain, name ≤ 63 chars)."""
    prefix, _, name = key.rpartition("/")
    if prefix and not is_dns_subdomain(prefix):
        return False
    return len(name) <= 63 and _NAME.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and _NAME.fullmatch(value) is not None)


def check_metadata(labels: Mapping[str, str], annotations: Mapping[str, str], *, field: str) -> None:
    """Reject user labels/annotations Kubernetes would refuse, naming the offending key."""
    for key, value in labels.items():
        if not is_qualified_name(key):
            raise BuildError(f"{field}.labels", f"{key!r} is not a valid label key")
        if not is_label_value(value):
            raise BuildError(f"{field}.labels.{key}", f"{value!r} is not a valid label value")
    for key in annotations:
        if not is_qualified_name(key):
            raise BuildError(f"{field}.annotations", f"{key!r} is not a valid annotation key")


def pod_labels(
    job: Job, *, controller_id: str, user: Sequence[Mapping[str, str]], warnings: list[str]
) -> dict[str, str]:
    labels: dict[str, str] = {}
    for layer in user:
        labels.update(layer)
    labels[UUID_LABEL] = job.uuid
    if controller_id:
        labels[CONTROLLER_ID_LABEL] = controller_id
    for tag, value in job.agent_tags.items():
        key = TAG_LABEL_PREFIX + tag
        if is_qualified_name(key) and is_label_value(value):
            labels[key] = value
        else:
            warnings.append(f"agent tag {tag}={value} is not a valid Kubernetes label; not added to the pod")
    return labels


def pod_annotations(
    job: Job,
    *,
    user: Sequence[Mapping[str, str]],
    pod_template_name: str | None,
    sidecar_names: Sequence[str],
) -> dict[str, str]:
    annotations = {SAFE_TO_EVICT: "false"}
    for layer in user:
        annotations.update(layer)
    for key, env_name in _ENV_ANNOTATIONS:
        annotations[key] = job.env.get(env_name, "")
    build_url = job.env.get("BUILDKITE_BUILD_URL", "")
    annotations["buildkite.com/job-url"] = f"{build_url}#{job.uuid}" if build_url else ""
    annotations["buildkite.com/job-priority"] = str(job.priority)
    if pod_template_name:
        annotations[POD_TEMPLATE_ANNOTATION] = pod_template_name
    for index, name in enumerate(sidecar_names):
        annotations[f"buildkite.com/sidecar-{index}"] = name
    return annotations
