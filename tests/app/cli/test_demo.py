"""`buildkite-controller demo`: the README's first command, run as a user runs it, plus its pure parts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.demo_jobs import demo_jobs
from app.cli.demo_progress import JobProgress

ROOT = Path(__file__).resolve().parents[3]
# A guard only: the demo gives its jobs 60 s itself and fails past that. Its start (two servers, a child
# process importing the Kubernetes client) can take a while on two cores shared with the whole suite.
DEMO_TIMEOUT_SECONDS = 240


def demo_command() -> list[str]:
    """The installed console script, as the README runs it; ``python -m app.cli`` where not installed."""
    script = Path(sys.executable).with_name("buildkite-controller")
    if script.exists():
        return [str(script), "demo"]
    # CI installs the package (as the README's set-up does), so there a missing script is a failure.
    assert not os.environ.get("CI"), f"{script} is missing: the install step did not run"
    return [sys.executable, "-m", "app.cli", "demo"]


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*demo_command(), "--workdir", str(tmp_path / "demo"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


@pytest.mark.timeout(DEMO_TIMEOUT_SECONDS + 10)
def test_demo_runs_every_job_of_the_example_pipeline_to_its_end(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    output = result.stdout
    assert result.returncode == 0, f"{output}\n{result.stderr}\n{_controller_log(tmp_path)}"
    assert re.search(r"All 4 jobs settled in \d+\.\d s, as expected:", output), output
    summary = output.split("as expected:", 1)[1]
    assert re.search(r"passed\s+9934b7e0-38b4-5844-8a6a-db2aff697ea4\s+:go: test", summary)
    assert re.search(r"passed\s+969f2636-2295-5a6d-84d7-6fdb0ca151cc\s+:docker: image lint", summary)
    assert re.search(r"failed\s+[0-9a-f-]{36}\s+:boom: broken image", summary)
    assert re.search(r"reason: The following containers could not be created or their images", summary)
    assert "ImagePull" in summary and "does-not-exist" in summary  # ErrImagePull or ImagePullBackOff
    assert re.search(r"canceled\s+[0-9a-f-]{36}\s+:hourglass: cancelled while its pod starts", summary)
    # The live table's last state: confirmed, pod, running, finished, cleaned (✓ or · for not reached).
    rows = {_label(row): row for row in output.split("as expected:", 1)[0].splitlines() if "│" in row}
    marks = {label: "".join(cell.strip()[:1] for cell in row.split("│")[2:7]) for label, row in rows.items()}
    assert marks[":go: test"] == marks[":docker: image lint"] == "✓✓✓✓✓", rows
    assert marks[":boom: broken image"] == "✓✓·✓✓", rows  # never ran
    assert "Status page: http://127.0.0.1:" in output


@pytest.mark.timeout(DEMO_TIMEOUT_SECONDS + 10)
def test_demo_fails_when_a_job_ends_otherwise_than_expected(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.yml"
    pipeline.write_text(
        "agents: {queue: kubernetes}\n"
        "steps:\n"
        "  - label: typo in the image\n"
        "    image: registry.example.com/does-not-exist:2\n"
        "    command: make\n"
    )
    result = run_demo(tmp_path, "--pipeline", str(pipeline))
    assert result.returncode == 1, result.stdout
    assert "3 of 3 jobs settled" in result.stdout and "1 ended unexpectedly" in result.stdout
    assert re.search(r"failed\s+[0-9a-f-]{36}\s+typo in the image\s+\(expected passed\)", result.stdout)


@pytest.mark.parametrize(
    ("text", "message"),
    [(None, "cannot read"), ("steps: [{command: make, plugins: 3}]", "plugins")],
    ids=["missing", "invalid"],
)
def test_demo_refuses_a_pipeline_it_cannot_read(tmp_path: Path, text: str | None, message: str) -> None:
    pipeline = tmp_path / "pipeline.yml"
    if text is not None:
        pipeline.write_text(text)
    result = run_demo(tmp_path, "--pipeline", str(pipeline))
    assert result.returncode == 2 and message in result.stdout, result.stdout


def test_demo_jobs_are_the_pipelines_plus_a_broken_image_and_a_cancel() -> None:
    jobs = demo_jobs(ROOT / "examples" / "pipeline.yml", queue="kubernetes")
    assert [(job.label, job.expect) for job in jobs] == [
        (":go: test", "passed"),
        (":docker: image lint", "passed"),
        (":boom: broken image", "failed"),
        (":hourglass: cancelled while its pod starts", "canceled"),
    ]
    assert (
        "kubernetes-buildkite-plugin" in jobs[0].env["BUILDKITE_PLUGINS"]
        and "BUILDKITE_JOB_ID" not in jobs[0].env
    )
    assert [job.cancel_when_pod_exists for job in jobs] == [False, False, False, True]


# --- JobProgress: what "settled" means ----------------------------------------------------------------

CONFIRMED = {"stage": "created", "trail": [{"what": "webhook"}, {"what": "confirmed"}]}


def progress() -> JobProgress:
    return JobProgress("job", "0190a1b2-0000-4000-8000-000000000001", "passed", scheduled_at=100.0)


def test_milestones_are_stamped_once_at_first_sight() -> None:
    job = progress()
    job.update(now=100.4, state="scheduled", exit_status=None, pod={"phase": "Pending"}, record=CONFIRMED)
    job.update(now=101.0, state="running", exit_status=None, pod={"phase": "Running"}, record=CONFIRMED)
    job.update(now=102.0, state="running", exit_status=None, pod={"phase": "Running"}, record=CONFIRMED)
    assert job.at == {"confirmed": 0.4, "pod": 0.4, "running": 1.0}
    assert not job.settled


def test_a_finished_job_is_not_settled_while_its_pod_exists_or_the_controller_still_tracks_it() -> None:
    job = progress()
    job.update(now=101, state="scheduled", exit_status=None, pod={"phase": "Running"}, record=CONFIRMED)
    job.update(now=102, state="passed", exit_status="0", pod={"phase": "Succeeded"}, record=CONFIRMED)
    assert not job.settled and "cleaned" not in job.at
    job.update(now=103, state="passed", exit_status="0", pod=None, record=CONFIRMED)
    assert not job.settled and job.at["cleaned"] == 3.0  # the pod is gone, the record still says created
    job.update(now=104, state="passed", exit_status="0", pod=None, record={**CONFIRMED, "stage": "finished"})
    assert job.settled and job.outcome_as_expected


def test_a_failure_carries_the_controllers_reason_and_is_unexpected_for_a_passing_job() -> None:
    job = progress()
    record = {"stage": "failed", "outcome": "failed: image_pull", "reason": "ErrImagePull", "trail": []}
    job.update(now=101, state="failed", exit_status="-1", pod=None, record=record)
    assert job.settled and job.reason == "ErrImagePull" and not job.outcome_as_expected
    assert "confirmed" not in job.at


def _label(row: str) -> str:
    cells = row.split("│")
    return cells[1].strip() if len(cells) > 2 else ""


def _controller_log(tmp_path: Path) -> str:
    log = tmp_path / "demo" / "controller.log"
    return log.read_text()[-3000:] if log.exists() else "(no controller log)"


def test_demo_says_why_when_the_controller_cannot_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import app.cli.demo_stack as demo_stack
    from app.cli import main

    bad = {**demo_stack.CONTROLLER_SETTINGS, "log-format": "not-a-format"}
    monkeypatch.setattr(demo_stack, "CONTROLLER_SETTINGS", bad)
    assert main(["demo", "--workdir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "the controller exited with status 2" in out and "log-format" in out, out
