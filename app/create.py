"""Create: build the job's pod with ``podspec`` and create it; return what happened, decide nothing else.

Input: one admitted ``podspec.Job`` and its attempt number, from ``admit``. Output: an outcome value —

    Created   the pod was created                Exists  a pod of that name was already there
    Retry     may work later (quota, overload)   Failed  can never work (bad config, refused pod)

The name is deterministic, so ``Exists`` means the work is done. ``admit`` owns what follows: retries,
the quota deadline, failing the job in Buildkite.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from app.errors import AlreadyExists, Forbidden, Invalid, KubeError, KubeUnavailable
from app.kube import KubeGateway
from app.logs import job_log
from app.metrics import Metrics
from podspec import BuildError, Job, PodConfig, build, pod_template_name

log = logging.getLogger(__name__)

# Quota frees up as other pods finish: check again in a while rather than failing the job at once.
QUOTA_RETRY_SECONDS = 10.0
# The apiserver is overloaded or restarting: back off with jitter, at most this long.
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Created:
    pod: str


@dataclass(frozen=True, slots=True)
class Exists:
    pod: str


@dataclass(frozen=True, slots=True)
class Retry:
    after: float
    reason: str
    quota: bool = False  # refused by a ResourceQuota: retried until the quota deadline, then failed


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str  # short code for metrics: build_error, invalid, forbidden, internal_error
    message: str  # what the job's users read in Buildkite


CreateOutcome = Created | Exists | Retry | Failed


class Creator:
    def __init__(self, *, kube: KubeGateway, pod_config: PodConfig, metrics: Metrics) -> None:
        self._kube = kube
        self._config = pod_config
        self._metrics = metrics

    def pod_name(self, job: Job) -> str:
        return self._config.job_prefix + job.uuid

    async def create(self, job: Job, *, attempt: int = 1) -> CreateOutcome:
        name = self.pod_name(job)
        jlog = job_log(log, job.uuid, stage="create", pod=name)
        manifest = await self._manifest(job, jlog, attempt)
        if not isinstance(manifest, dict):
            return manifest
        try:
            await self._kube.create_pod(manifest)
        except AlreadyExists:
            self._metrics.duplicates_avoided.labels("create").inc()
            jlog.info("pod already exists")
            return Exists(name)
        except KubeError as exc:
            return self._refused(exc, attempt)
        except Exception as exc:  # a bug or an untranslated client error: the job must not be stranded
            jlog.exception("create failed unexpectedly; retrying")
            return Retry(_backoff(attempt), f"unexpected {type(exc).__name__}")
        self._metrics.pods_created.inc()
        jlog.info("pod created")
        return Created(name)

    async def _manifest(
        self, job: Job, jlog: logging.LoggerAdapter[Any], attempt: int
    ) -> dict[str, Any] | Retry | Failed:
        try:
            template = await self._template_spec(job)
            built = build(job, config=self._config, pod_template_spec=template)
        except BuildError as exc:
            return Failed("build_error", f"buildkite-controller could not build a pod for this job: {exc}")
        except KubeError as exc:
            return self._refused(exc, attempt)
        except Exception as exc:
            # Building is pure, so retrying would fail the same way: say so in the job, not in silence.
            jlog.exception("building the pod crashed")
            return Failed(
                "internal_error",
                f"buildkite-controller could not build a pod for this job (internal error: "
                f"{type(exc).__name__}: {str(exc)[:500]}). Please report this.",
            )
        for warning in built.warnings:
            jlog.warning("%s", warning)
        return built.manifest

    async def _template_spec(self, job: Job) -> dict[str, Any] | None:
        name = pod_template_name(job)
        if name is None:
            return None
        template = await self._kube.get_pod_template(name)
        if template is None:
            raise BuildError(
                "kubernetes.podTemplate",
                f"PodTemplate {name!r} not found in namespace {self._kube.namespace!r}",
            )
        spec = (template.get("template") or {}).get("spec")
        if not isinstance(spec, dict):
            raise BuildError("kubernetes.podTemplate", f"PodTemplate {name!r} has no template.spec")
        return spec

    def _refused(self, exc: KubeError, attempt: int) -> Retry | Failed:
        self._metrics.pod_create_errors.labels(exc.reason or str(exc.status)).inc()
        if isinstance(exc, Invalid):
            causes = "".join(f"\n  - {cause}" for cause in exc.causes)
            return Failed("invalid", f"Kubernetes rejected the pod built for this job: {exc.message}{causes}")
        if isinstance(exc, Forbidden):
            if exc.is_quota:
                return Retry(QUOTA_RETRY_SECONDS, f"quota: {exc.message}", quota=True)
            return Failed("forbidden", f"Kubernetes refused to create the pod for this job: {exc.message}")
        if isinstance(exc, KubeUnavailable) and exc.retry_after is not None:
            return Retry(exc.retry_after, str(exc))
        return Retry(_backoff(attempt), str(exc))


def _backoff(attempt: int) -> float:
    return min(MAX_BACKOFF_SECONDS, 0.2 * 2.0 ** min(attempt, 8)) * (0.5 + random.random() / 2)
