"""Pod labels and annotations (reference §4.2), and the keys that belong to the controller.

Labels let the controller find its pods (``buildkite.com/job-uuid``, ``buildkite.com/controller-id``)
and let people select by agent tag (``tag.buildkite.com/<k>``). User metadata (``default-metadata``,
then the plugin's ``metadata``) goes in first, then the controller's own keys. The controller's keys
are *reserved*: user input naming one is refused (``BuildError`` / a config error), never silently
overwritten, because the service reads them back from the live pod — a forged ``failure-reported``
annotation made the controller delete the pod at once, and a forged ``controller-id`` label hid the
pod from the watch. ``cluster-autoscaler.kubernetes.io/safe-to-evict`` defaults to ``"false"``
(evicting a CI pod kills the build) but stays overridable.

This module is the one home of those keys; ``app`` imports them from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from podspec.errors import BuildError
from podspec.job import Job

JOB_UUID_LABEL = "buildkite.com/job-uuid"
# Present only when the controller has an id; a pod without it is what an id-less controller watches.
CONTROLLER_ID_LABEL = "buildkite.com/controller-id"
TAG_LABEL_PREFIX = "tag.buildkite.com/"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
POD_TEMPLATE_ANNOTATION = "buildkite.com/pod-template-name"
JOB_URL_ANNOTATION = "buildkite.com/job-url"
JOB_PRIORITY_ANNOTATION = "buildkite.com/job-priority"
SIDECAR_ANNOTATION_PREFIX = "buildkite.com/sidecar-"
# Written by the service *on the live pod* when it fails the Buildkite job (value: the reason word), so a
# restarted controller sees the fact in the cluster and never fails the same job twice.
FAILURE_REPORTED_ANNOTATION = "buildkite.com/failure-reported"
# Written when the job could not be failed (the agent owned it) and a notification was sent instead.
FAILURE_NOTIFIED_ANNOTATION = "buildkite.com/failure-notified"
_ENV_ANNOTATIONS = (
    ("buildkite.com/build-url", "BUILDKITE_BUILD_URL"),
    ("buildkite.com/build-branch", "BUILDKITE_BRANCH"),
    ("buildkite.com/build-repo", "BUILDKITE_REPO"),
    ("buildkite.com/pipeline-slug", "BUILDKITE_PIPELINE_SLUG"),
    ("buildkite.com/step-key", "BUILDKITE_STEP_KEY"),
)
# Every key the controller sets on a pod or reads back from one, as a label or an annotation.
RESERVED_KEYS = frozenset(
    {
        JOB_UUID_LABEL,
        CONTROLLER_ID_LABEL,
        POD_TEMPLATE_ANNOTATION,
        JOB_URL_ANNOTATION,
        JOB_PRIORITY_ANNOTATION,
        FAILURE_REPORTED_ANNOTATION,
        FAILURE_NOTIFIED_ANNOTATION,
        *(key for key, _ in _ENV_ANNOTATIONS),
    }
)
RESERVED_PREFIXES = (TAG_LABEL_PREFIX, SIDECAR_ANNOTATION_PREFIX)
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


def is_reserved(key: str) -> bool:
    """True for a label or annotation key that only the controller may write."""
    return key in RESERVED_KEYS or key.startswith(RESERVED_PREFIXES)


def reserved_error(field: str, key: str) -> BuildError:
    return BuildError(
        field,
        f"{key!r} is reserved for buildkite-controller, which sets it and reads it back; "
        "pipelines and controller defaults cannot set, change or remove it",
    )


def check_metadata(labels: Mapping[str, str], annotations: Mapping[str, str], *, field: str) -> None:
    """Reject user labels/annotations that are reserved or that Kubernetes would refuse, naming the key."""
    for kind, entries in (("labels", labels), ("annotations", annotations)):
        for key in entries:
            if is_reserved(key):
                raise reserved_error(f"{field}.{kind}", key)
    for key, value in labels.items():
        if not is_qualified_name(key):
            raise BuildError(f"{field}.labels", f"{key!r} is not a valid label key")
        if not is_label_value(value):
            raise BuildError(f"{field}.labels.{key}", f"{value!r} is not a valid label value")
    for key in annotations:
        if not is_qualified_name(key):
            raise BuildError(f"{field}.annotations", f"{key!r} is not a valid annotation key")


def check_spec_metadata(spec: object, *, field: str) -> None:
    """Refuse pod metadata smuggled into a PodSpec or PodSpec patch that targets the controller's keys.

    A PodSpec has no ``metadata``, so such a key is dropped as unknown (a warning). When it names a
    reserved key, or carries a strategic-merge directive (``$patch: replace`` …) that would remove
    them, its author meant to change the controller's metadata: say so and fail the job instead.
    """
    if not isinstance(spec, Mapping):
        return
    for key, metadata in spec.items():
        if not (isinstance(key, str) and key.lower() == "metadata" and isinstance(metadata, Mapping)):
            continue
        path = f"{field}.{key}"
        for kind, entries in metadata.items():
            if isinstance(kind, str) and kind.startswith("$"):
                raise BuildError(
                    f"{path}.{kind}", "a directive on pod metadata could remove the controller's labels"
                )
            if not (isinstance(kind, str) and kind.lower() in ("labels", "annotations")):
                continue
            for name in entries if isinstance(entries, Mapping) else ():
                if isinstance(name, str) and (name.startswith("$") or is_reserved(name)):
                    raise reserved_error(f"{path}.{kind}", name)


def pod_labels(
    job: Job, *, controller_id: str, user: Sequence[Mapping[str, str]], warnings: list[str]
) -> dict[str, str]:
    labels: dict[str, str] = {}
    for layer in user:
        labels.update(layer)
    labels[JOB_UUID_LABEL] = job.uuid
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
    annotations[JOB_URL_ANNOTATION] = f"{build_url}#{job.uuid}" if build_url else ""
    annotations[JOB_PRIORITY_ANNOTATION] = str(job.priority)
    if pod_template_name:
        annotations[POD_TEMPLATE_ANNOTATION] = pod_template_name
    for index, name in enumerate(sidecar_names):
        annotations[f"{SIDECAR_ANNOTATION_PREFIX}{index}"] = name
    return annotations
