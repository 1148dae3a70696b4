"""The status page in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

During the demo's jobs: load ``/``, see a job appear in flight and settle among the outcomes (the page
refreshes itself), click "Reconcile now", open a job's trail; the browser logs no console error. The
screenshots go to tests/output/ (git-ignored). Where Chromium or Playwright is missing the test skips,
except in CI (``CI=true``), where that means the set-up is broken.
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from app.cli.demo_jobs import DemoRun, demo_jobs

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "tests" / "output"
STEP_SECONDS = 0.2


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        assert not os.environ.get("CI"), "chromium is missing: .ci/run installs it with apt-get"
        pytest.skip("no system chromium (apt-get install chromium)")
    return found


def playwright_api() -> ModuleType:
    try:
        return importlib.import_module("playwright.sync_api")
    except ImportError:
        assert not os.environ.get("CI"), "playwright is missing: it is in the dev extra"
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Any, DemoRun]]:
    """The demo's stack with its jobs not yet scheduled, and a thread playing Buildkite and the agents."""
    from app.cli.demo_stack import QUEUE, DemoStack

    with DemoStack(tmp_path) as stack:
        jobs = demo_jobs(ROOT / "examples" / "pipeline.yml", queue=QUEUE)
        run = DemoRun(stack, jobs, pipeline_slug="pipeline")
        stop = threading.Event()
        errors: list[BaseException] = []

        def drive() -> None:
            try:
                while not stop.wait(STEP_SECONDS):
                    run.step()
            except BaseException as error:  # surfaced after the test
                errors.append(error)

        driver = threading.Thread(target=drive, name="demo-driver", daemon=True)
        driver.start()
        try:
            yield stack, run
        finally:
            stop.set()
            driver.join(10)
        assert not errors, errors


# The stack's start (a `serve` child process) and the jobs take a while on two busy cores.
@pytest.mark.timeout(300)
def test_status_page_in_chromium_follows_the_demo_jobs(demo: tuple[Any, DemoRun]) -> None:
    executable = chromium_path()
    sync_api = playwright_api()
    stack, run = demo
    url = stack.endpoints.controller
    OUTPUT.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(url + "/")
            assert page.inner_text("#role") == "leader"
            assert page.locator("#recent-jobs").count() == 0  # nothing has happened yet

            scheduled = run.schedule()  # the webhooks go out now, with the page open
            uuids = {job.label: uuid for job, uuid, _ in scheduled}
            lint = uuids[":docker: image lint"]
            broken = uuids[":boom: broken image"]
            # The page refreshes itself: the job shows up in flight, then among the outcomes.
            page.wait_for_selector(f'#in-flight-jobs tr[data-job="{lint}"]', timeout=15_000)
            page.wait_for_selector(f'#recent-jobs tr[data-job="{lint}"]', timeout=45_000)
            page.wait_for_selector(f'#recent-jobs tr[data-job="{broken}"]', timeout=45_000)
            assert "finished" in page.inner_text(f'#recent-jobs tr[data-job="{lint}"]')
            assert "could not be pulled" in page.inner_text(f'#recent-jobs tr[data-job="{broken}"]')
            page.screenshot(path=str(OUTPUT / "status-page.png"), full_page=True)

            graphql_calls = len(stack.buildkite.calls_to("/v1"))
            with page.expect_navigation():
                page.click("#reconcile")
            assert page.url.rstrip("/") == url
            assert len(stack.buildkite.calls_to("/v1")) > graphql_calls, "the click swept (a GraphQL query)"
            assert page.inner_text("#last-sweep").startswith("found ")

            with page.expect_navigation():
                page.click(f'#recent-jobs a[href="/jobs/{broken}"]')
            assert page.inner_text("#stage") == "failed"
            steps = page.locator("#trail td.what").all_inner_texts()
            assert steps[0] == "webhook" and "confirmed" in steps and "decision" in steps, steps
            assert "ImagePull" in page.inner_text("#reason")
            page.screenshot(path=str(OUTPUT / "job-trail.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    print(f"screenshots: {OUTPUT / 'status-page.png'} and {OUTPUT / 'job-trail.png'}")
