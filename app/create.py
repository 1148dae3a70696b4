"""Create: build the job's pod with ``podspec`` and create it; the job's pod now exists, or the job failed.

Input: admitted ``podspec.Job`` values. Output: a Pod named ``<prefix><job-uuid>`` in the cluster, which
the pod watch then follows. The name is deterministic, so ``AlreadyExists`` means another webhook, the
sweep or another replica got there first: the work is done. A job whose pod can never be valid (bad
plugin config, rejected by the apiserver, forbidden by policy) is failed in Buildkite with the reason;
a create that may succeed later (quota, overload) is queued again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from app.errors import AlreadyExists, Forbidden, Invalid, KubeError, KubeUnavailable
from app.fail import JobFailer
from app.intake import Intake
from app.kube import KubeGateway
from app.logs import job_log
from app.metrics import Metrics
from app.timings import Timings
from podspec import BuildError, Job, PodConfig, build, pod_template_name

log = logging.getLogger(__name__)

# Quota frees up as other pods finish: check again in a while rather than failing the job.
QUOTA_RETRY_SECONDS = 10.0
# The apiserver is overloaded or restarting: back off with jitter, at most this long.
MAX_BACKOFF_SECONDS = 30.0


class Creator:
    def __init__(
        self,
        *,
        kube: KubeGateway,
        pod_config: PodConfig,
        failer: JobFailer,
        intake: Intake,
        requeue: Callable[[Job], None],
        metrics: Metrics,
        timings: Timings,
    ) -> None:
        self._kube = kube
        self._config = pod_config
        self._failer = failer
        self._intake = intake
        self._requeue = requeue
        self._metrics = metrics
        self._timings = timings
        self._attempts: dict[str, int] = {}

    async def create(self, job: Job) -> bool:
        """True when the job's pod exists afterwards."""
        jlog = job_log(log, job.uuid, stage="create", pod=self._config.job_prefix + job.uuid)
        if self._intake.is_cancelled(job.uuid):
            jlog.info("not created: the job was cancelled")
            return False
        self._intake.mark(job.uuid, "creating")
        manifest = await self._manifest(job, jlog)
        if manifest is None:
            return False
        try:
            await self._kube.create_pod(manifest)
        except AlreadyExists:
            self._metrics.duplicates_avoided.labels("create").inc()
            jlog.info("pod already exists")
            return self._done(job)
        except KubeError as exc:
            return await self._create_failed(job, exc, manifest, jlog)
        except Exception as exc:  # a bug or an untranslated client error: the job must not be stranded
            jlog.exception("create failed unexpectedly; retrying")
            self._retry_later(job, KubeUnavailable(0, "Unexpected", repr(exc)), jlog)
            return False
        self._metrics.pods_created.inc()
        self._timings.observe(job.uuid, "pod_created")
        jlog.info("pod created")
        return self._done(job)

    async def _manifest(self, job: Job, jlog: logging.LoggerAdapter[Any]) -> dict[str, Any] | None:
        try:
            template = await self._template_spec(job)
            built = build(job, config=self._config, pod_template_spec=template)
        except BuildError as exc:
            await self._fail(
                job, "build_error", f"buildkite-controller could not build a pod for this job: {exc}"
            )
            return None
        except KubeError as exc:
            self._retry_later(job, exc, jlog)
            return None
        except Exception as exc:
            # Building is pure, so retrying would fail the same way: say so in the job, not in silence.
            jlog.exception("building the pod crashed")
            await self._fail(
                job,
                "internal_error",
                f"buildkite-controller could not build a pod for this job (internal error: "
                f"{type(exc).__name__}: {str(exc)[:500]}). Please report this.",
            )
            return None
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

    async def _create_failed(
        self, job: Job, exc: KubeError, manifest: dict[str, Any], jlog: logging.LoggerAdapter[Any]
    ) -> bool:
        self._metrics.pod_create_errors.labels(exc.reason or str(exc.status)).inc()
        if isinstance(exc, Invalid):
            causes = "".join(f"\n  - {cause}" for cause in exc.causes)
            await self._fail(
                job, "invalid", f"Kubernetes rejected the pod built for this job: {exc.message}{causes}"
            )
            return False
        if isinstance(exc, Forbidden) and not exc.is_quota:
            await self._fail(
                job, "forbidden", f"Kubernetes refused to create the pod for this job: {exc.message}"
            )
            return False
        self._retry_later(job, exc, jlog)
        return False

    def _retry_later(self, job: Job, exc: KubeError, jlog: logging.LoggerAdapter[Any]) -> None:
        attempt = self._attempts.get(job.uuid, 0) + 1
        self._attempts[job.uuid] = attempt
        if isinstance(exc, Forbidden):
            delay = QUOTA_RETRY_SECONDS
        elif isinstance(exc, KubeUnavailable) and exc.retry_after is not None:
            delay = exc.retry_after
        else:
            delay = min(MAX_BACKOFF_SECONDS, 0.2 * 2 ** min(attempt, 8)) * (0.5 + random.random() / 2)
        jlog.warning("create failed (%s); retrying in %.1f s", exc, delay)
        self._intake.mark(job.uuid, "queued")
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self._requeue, job)

    def _done(self, job: Job) -> bool:
        self._attempts.pop(job.uuid, None)
        self._intake.mark(job.uuid, "done")
        return True

    async def _fail(self, job: Job, reason: str, message: str) -> None:
        self._attempts.pop(job.uuid, None)
        self._intake.mark(job.uuid, "dropped")
        await self._failer.fail(job.uuid, reason=reason, message=message)
