"""The Role in deploy/ grants exactly what the code calls: measured on the wire, not read from the code.

A controller runs through every path that touches the Kubernetes API — create (with a PodTemplate),
watch, an image-pull failure (events, annotation, delete), an init-container failure (its log), a cancel,
leader election — and the fake
apiserver records each (verb, resource) it served. Every one must be in ``REQUIRED_RBAC`` (which
tests/deploy checks against the Role), and every entry of ``REQUIRED_RBAC`` must have been used.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from app.kube import REQUIRED_RBAC
from tests.flow.harness import NAMESPACE, running_stack, wait_until

GROUPS = {"leases": "coordination.k8s.io"}


def test_the_controller_uses_exactly_the_rbac_it_declares(tmp_path: Path) -> None:
    flags = {"image-pull-backoff-grace-period": "0s"}
    with running_stack(tmp_path, flags=flags) as stack:
        stack.kube.create(
            "podtemplates",
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": "base"},
                "template": {"spec": {"containers": [{"name": "main", "image": "alpine:3.20"}]}},
            },
            namespace=NAMESPACE,
        )
        templated = stack.buildkite.add_job(plugins=[{"kubernetes": {"podTemplate": "base"}}])
        failing = stack.buildkite.add_job()
        cancelled = stack.buildkite.add_job()
        init_failing = stack.buildkite.add_job()
        for uuid in (templated, failing, cancelled, init_failing):
            stack.scheduled(uuid)
        wait_until(
            lambda: all(stack.pod_for(u) for u in (templated, failing, cancelled, init_failing)),
            timeout=10,
            what="four pods",
        )

        def image_pull_failure(pod: dict) -> None:  # type: ignore[type-arg]
            started = datetime.fromtimestamp(time.time() - 5, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            pod["status"] = {
                "phase": "Pending",
                "startTime": started,
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}},
                    }
                    for c in pod["spec"]["containers"]
                ],
            }

        def init_failure(pod: dict) -> None:  # type: ignore[type-arg]
            first = pod["spec"]["initContainers"][0]
            exited = {"terminated": {"exitCode": 1, "reason": "Error"}}
            status = {"name": first["name"], "image": first["image"], "ready": False, "restartCount": 0}
            pod["status"] = {"phase": "Failed", "initContainerStatuses": [status | {"state": exited}]}

        stack.kube.modify("pods", f"buildkite-{failing}", image_pull_failure, namespace=NAMESPACE)
        stack.kube.modify("pods", f"buildkite-{init_failing}", init_failure, namespace=NAMESPACE)
        stack.buildkite.cancel(cancelled)
        stack.sender.send_job_event("job.finished", stack.buildkite.job(cancelled))
        wait_until(
            lambda: stack.pod_for(failing) is None and stack.pod_for(cancelled) is None,
            timeout=10,
            what="the failed and the cancelled pod deleted",
        )
        wait_until(lambda: stack.kube.request_count("update", "leases"), timeout=10, what="a lease renewal")
        wait_until(
            lambda: stack.buildkite.job(init_failing).state == "finished", timeout=10, what="init failure"
        )

        used = {
            (GROUPS.get(resource, ""), resource, verb)
            for (verb, resource), count in stack.kube.faults.counts.items()
            if count
        }
    assert used <= REQUIRED_RBAC, f"calls the Role does not grant: {sorted(used - REQUIRED_RBAC)}"
    assert used == REQUIRED_RBAC, f"granted but never used: {sorted(REQUIRED_RBAC - used)}"
