"""The decision trail of real jobs: the controller served by uvicorn, the fakes over HTTP, a simulated node.

One job fails (its image cannot be pulled) and one is cancelled while its pod waits; each trail must tell
the story in order, as the controller lived it, through ``GET /jobs/{uuid}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.simulate.kubelet import SimulatedKubelet
from tests.flow.harness import NAMESPACE, Stack, running_stack, wait_until


@contextmanager
def stack_with_node(tmp_path: Path) -> Iterator[Stack]:
    flags = {"image-pull-backoff-grace-period": "1s", "failed-pod-retention": "0s"}
    with (
        running_stack(tmp_path, flags=flags) as stack,
        SimulatedKubelet(stack.kube.url, namespace=NAMESPACE, tick_seconds=0.05) as kubelet,
    ):
        kubelet.start()
        yield stack


def trail(stack: Stack, uuid: str) -> dict[str, Any]:
    response = stack.http.get(f"{stack.controller.url}/jobs/{uuid}", headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def stage_of(stack: Stack, uuid: str) -> str | None:
    response = stack.http.get(f"{stack.controller.url}/jobs/{uuid}", headers={"Accept": "application/json"})
    return str(response.json()["stage"]) if response.status_code == 200 else None


def ended(stack: Stack, uuid: str) -> dict[str, Any] | None:
    job = trail(stack, uuid)
    return job if job["stage"] in ("failed", "cancelled", "finished") else None


def steps(job: dict[str, Any]) -> list[tuple[str, str]]:
    return [(step["what"], step["detail"]) for step in job["trail"]]


def in_order(found: list[tuple[str, str]], wanted: list[tuple[str, str]]) -> bool:
    """Each wanted (what, detail fragment) appears, in this order, among the steps found."""
    remaining = iter(found)
    return all(any(what == w and fragment in detail for w, detail in remaining) for what, fragment in wanted)


def test_trail_of_a_job_whose_image_cannot_be_pulled(tmp_path: Path) -> None:
    with stack_with_node(tmp_path) as stack:
        uuid = stack.buildkite.add_job(image="registry.example/team/does-not-exist:1")
        [delivery] = stack.scheduled(uuid)
        assert delivery.status == 202
        job = wait_until(lambda: ended(stack, uuid), timeout=20, what="the job failed")
        assert job["stage"] == "failed" and job["outcome"] == "failed: image_pull", steps(job)
        assert "ImagePull" in job["reason"] and "does-not-exist" in job["reason"]  # ErrImagePull or BackOff
        found = steps(job)
        assert in_order(
            found,
            [
                ("webhook", ""),
                ("confirmed", "scheduled"),
                ("create", ""),
                ("created", f"buildkite-{uuid}"),
                ("pod", "phase Pending"),
                ("decision", "image_pull"),
                ("buildkite", "could not be pulled"),
            ],
        ), found
        times = [step["at"] for step in job["trail"]]
        assert times == sorted(times)
        assert stack.buildkite.job(uuid).state == "finished"  # failed in Buildkite, as the trail says


def test_trail_of_a_job_cancelled_while_its_pod_waits(tmp_path: Path) -> None:
    # No node: the pod stays Pending until the cancel.
    with running_stack(tmp_path) as stack:
        uuid = stack.buildkite.add_job()
        stack.scheduled(uuid)
        # The create's own answer, not just the pod in the apiserver: the trail's "created" is written
        # when the answer arrives, and the cancel must come after it for the order asserted below.
        pod_name = f"buildkite-{uuid}"
        wait_until(lambda: ("created", pod_name) in steps(trail(stack, uuid)), what="the create answered")
        assert stack.buildkite.cancel(uuid) == "canceled"
        [delivery] = stack.sender.send_job_event("job.finished", stack.buildkite.job(uuid))
        assert delivery.status < 300
        job = wait_until(lambda: ended(stack, uuid), timeout=10, what="the job ended")
        assert job["stage"] == "cancelled" and job["outcome"] == "cancelled", steps(job)
        found = steps(job)
        assert in_order(
            found,
            [
                ("webhook", ""),
                ("confirmed", ""),
                ("created", f"buildkite-{uuid}"),
                ("webhook", "cancelled"),
                ("decision", "cancelled"),
                ("pod", "pod deleted"),
            ],
        ), found
        assert stack.buildkite.finish_calls(uuid) == 0  # cancelled, not failed


def test_the_html_trail_of_a_real_job_shows_its_steps(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        uuid = stack.buildkite.add_job()
        stack.scheduled(uuid)
        pod_name = f"buildkite-{uuid}"
        wait_until(lambda: ("created", pod_name) in steps(trail(stack, uuid)), what="the create answered")
        page = stack.http.get(f"{stack.controller.url}/jobs/{uuid}", headers={"Accept": "text/html"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert f"buildkite-{uuid}" in page.text and '<td class="what">confirmed</td>' in page.text
        status = stack.get("/")
        assert status.status_code == 200 and f'href="/jobs/{uuid}"' in status.text
        assert re.search(r'id="last-sweep">\s*found \d+ scheduled.*\(\d+\.\d s ago\)', status.text, re.S)


def test_a_hostile_image_in_a_real_job_is_shown_escaped(tmp_path: Path) -> None:
    # The step's image is the job author's text; the controller fails the job quoting it.
    hostile = 'x"><script>alert(1)</script>'
    with running_stack(tmp_path) as stack:
        uuid = stack.buildkite.add_job(image=hostile)
        stack.scheduled(uuid)
        job = wait_until(lambda: ended(stack, uuid), timeout=20, what="the job failed")
        assert job["stage"] == "failed" and hostile in job["reason"], steps(job)
        for path in (f"/jobs/{uuid}", "/"):
            page = stack.http.get(stack.controller.url + path, headers={"Accept": "text/html"}).text
            assert "<script>alert(1)" not in page
            assert "x&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
