"""``buildkite-controller render`` and ``lint``, called in-process through ``app.cli.main``.

Every example pipeline must render to pods the strict Kubernetes schema and the apiserver's own
checks accept; bad input must fail with a message naming the step and the field.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from app.cli.pipeline import expand_pipeline
from app.cli.render import dump_manifests
from app.simulate.kube_validation import validate_pod
from tests.podspec.schema import pod_schema_errors

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
CONFIG = str(EXAMPLES / "config.yml")
PIPELINES = sorted(path for path in EXAMPLES.glob("*.yml") if path.name != "config.yml")


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def pods(self) -> list[dict[str, Any]]:
        return list(yaml.safe_load_all(self.out))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run the CLI in-process; returns exit code and captured output."""

    def run(*args: str) -> Run:
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def write(tmp_path: Path):
    """Write a dedented file under tmp_path and return its path as a string."""

    def make(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return str(path)

    return make


def container(pod: dict[str, Any], name: str, kind: str = "containers") -> dict[str, Any]:
    return next(c for c in pod["spec"].get(kind, []) if c["name"] == name)


def env_of(item: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in item.get("env", [])}


# ---- the examples ---------------------------------------------------------------------------------------


def test_there_are_several_example_pipelines() -> None:
    assert {"pipeline.yml", "sidecars.yml", "resource-classes.yml"} <= {path.name for path in PIPELINES}
    assert len(PIPELINES) >= 8


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda path: path.name)
def test_every_example_renders_pods_the_apiserver_accepts(cli, pipeline: Path) -> None:
    run = cli("render", str(pipeline), "--config", CONFIG)
    assert run.code == 0, run.err
    jobs = expand_pipeline(pipeline.read_text(), file_name=pipeline.name)
    assert len(run.pods) == len(jobs) > 0
    for pod in run.pods:
        assert pod_schema_errors(pod) == []
        assert validate_pod(pod) == []
        assert pod["metadata"]["namespace"] == "buildkite"
        assert pod["metadata"]["labels"]["buildkite.com/controller-id"] == "ci-cluster"
    assert run.out.startswith("---\n")


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda path: path.name)
def test_every_example_lints_clean(cli, pipeline: Path) -> None:
    run = cli("lint", str(pipeline), "--config", CONFIG)
    assert (run.code, run.out) == (0, "ok\n"), run.out


def test_the_default_example_renders_without_a_config(cli) -> None:
    run = cli("render", str(EXAMPLES / "pipeline.yml"))
    assert run.code == 0, run.err
    test, hadolint = run.pods
    assert test["metadata"]["annotations"]["buildkite.com/step-key"] == "test"
    assert test["metadata"]["labels"]["tag.buildkite.com/queue"] == "kubernetes"
    postgres = container(test, "postgres", "initContainers")
    assert postgres["restartPolicy"] == "Always"
    assert {"secretRef": {"name": "git-ssh"}} in container(test, "checkout")["envFrom"]
    assert (
        env_of(container(test, "container-0"))["BUILDKITE_COMMAND"]
        == "go vet ./...\ngo test -race -count=1 ./..."
    )
    assert container(hadolint, "container-0")["image"] == "hadolint/hadolint:v2.12.0-alpine"
    assert env_of(container(hadolint, "container-0"))["BUILDKITE_COMMAND"] == "hadolint Dockerfile"


def test_rendering_is_deterministic_from_any_directory(cli, tmp_path: Path) -> None:
    copy = tmp_path / "pipeline.yml"
    copy.write_text((EXAMPLES / "pipeline.yml").read_text())
    first = cli("render", str(EXAMPLES / "pipeline.yml")).out
    assert first == cli("render", str(EXAMPLES / "pipeline.yml")).out == cli("render", str(copy)).out


def test_resource_classes_from_the_config_size_the_command_container(cli) -> None:
    run = cli("render", str(EXAMPLES / "resource-classes.yml"), "--config", CONFIG, "--step", "compile")
    (pod,) = run.pods
    assert container(pod, "container-0")["resources"]["requests"] == {"cpu": "8", "memory": "16Gi"}
    assert pod["spec"]["nodeSelector"] == {"node.kubernetes.io/instance-type": "c7i.4xlarge"}
    assert "resources" not in container(pod, "checkout")


def test_a_patched_command_is_interposed_into_buildkite_command(cli) -> None:
    (pod,) = cli("render", str(EXAMPLES / "pod-spec-patch.yml"), "--step", "flaky").pods
    command = container(pod, "container-0")
    assert env_of(command)["BUILDKITE_COMMAND"] == "make test-flaky RETRIES=3"
    assert command["command"] == ["/workspace/tini-static"]


# ---- options ----------------------------------------------------------------------------------------------


def test_step_selects_by_key_or_label_and_names_unknown_steps(cli) -> None:
    assert len(cli("render", str(EXAMPLES / "multi-container.yml"), "--step", "py").pods) == 2
    assert len(cli("render", str(EXAMPLES / "pipeline.yml"), "--step", ":docker: image lint").pods) == 1
    run = cli("render", str(EXAMPLES / "pipeline.yml"), "--step", "deploy")
    assert run.code == 1
    assert "'deploy'" in run.err and "hadolint, test" in run.err


def test_job_uuid_names_the_pod_of_a_single_job(cli) -> None:
    chosen = "0190a1b2-c3d4-4e5f-8a9b-0c1d2e3f4a5b"
    run = cli("render", str(EXAMPLES / "pipeline.yml"), "--step", "test", "--job-uuid", chosen)
    (pod,) = run.pods
    assert pod["metadata"]["name"] == f"buildkite-{chosen}"
    assert env_of(container(pod, "agent"))["BUILDKITE_AGENT_ACQUIRE_JOB"] == chosen


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--job-uuid", "0190a1b2-c3d4-4e5f-8a9b-0c1d2e3f4a5b"], "2 are selected"),
        (["--step", "test", "--job-uuid", "not-a-uuid"], "not a UUID"),
    ],
    ids=["several-jobs", "bad-uuid"],
)
def test_job_uuid_is_refused_when_it_cannot_apply(cli, args: list[str], words: str) -> None:
    run = cli("render", str(EXAMPLES / "pipeline.yml"), *args)
    assert run.code == 1
    assert "job-uuid" in run.err and words in run.err


def test_queue_option_fills_in_only_where_no_queue_is_set(cli, write) -> None:
    path = write(
        "q.yml", "steps:\n  - {key: a, command: x}\n  - {key: b, command: y, agents: {queue: mine}}\n"
    )
    pods = cli("render", path, "--queue", "kubernetes").pods
    assert [p["metadata"]["labels"]["tag.buildkite.com/queue"] for p in pods] == ["kubernetes", "mine"]


# ---- podTemplate ------------------------------------------------------------------------------------------

TEMPLATE_STEP = """
steps:
  - key: big
    command: make
    plugins:
      - kubernetes:
          podTemplate: ci-large
"""
TEMPLATE = """
apiVersion: v1
kind: PodTemplate
metadata: {name: ci-large}
template:
  spec:
    nodeSelector: {pool: large}
    containers:
      - name: build
        image: golang:1.23
"""


def test_a_pod_template_step_needs_the_template_file(cli, write) -> None:
    run = cli("render", write("p.yml", TEMPLATE_STEP))
    assert run.code == 1
    assert "step 'big'" in run.err and "kubernetes.podTemplate" in run.err
    assert "--pod-template ci-large=FILE.yml" in run.err


def test_a_pod_template_file_supplies_the_starting_spec(cli, write) -> None:
    pipeline, template = write("p.yml", TEMPLATE_STEP), write("t.yml", TEMPLATE)
    run = cli("render", pipeline, "--pod-template", f"ci-large={template}")
    (pod,) = run.pods
    assert pod["spec"]["nodeSelector"] == {"pool": "large"}
    assert container(pod, "build")["image"] == "golang:1.23"
    assert pod["metadata"]["annotations"]["buildkite.com/pod-template-name"] == "ci-large"
    assert validate_pod(pod) == []


@pytest.mark.parametrize(
    ("value", "template", "words"),
    [
        ("ci-large", None, "NAME=FILE.yml"),
        ("ci-large={missing}", None, "cannot read"),
        ("ci-large={file}", "kind: Pod\nspec: {}\n", "PodTemplate manifest"),
        ("ci-large={file}", "kind: PodTemplate\ntemplate: 3\n", "template.spec"),
        ("ci-large={file}", "kind: [\n", "not valid YAML"),
    ],
    ids=["no-equals", "missing-file", "wrong-kind", "no-spec", "bad-yaml"],
)
def test_bad_pod_template_options_exit_2(
    cli, write, tmp_path: Path, value: str, template: str | None, words: str
) -> None:
    file = write("t.yml", template) if template is not None else ""
    option = value.format(file=file, missing=tmp_path / "nope.yml")
    run = cli("render", write("p.yml", TEMPLATE_STEP), "--pod-template", option)
    assert run.code == 2
    assert words in run.err


def test_lint_checks_the_rest_of_a_pod_template_step_and_notes_the_gap(cli, write) -> None:
    run = cli("lint", write("p.yml", TEMPLATE_STEP))
    assert (run.code, run.out) == (0, "ok\n")
    assert "PodTemplate 'ci-large' not checked" in run.err


# ---- bad input --------------------------------------------------------------------------------------------

BAD_PIPELINES = {
    "malformed-yaml": ("steps:\n  - command: [make\n", ["yaml", "not valid YAML", "line"]),
    "steps-not-a-list": ("steps: {command: make}\n", ["steps", "must be a list"]),
    "plugin-wrong-type": (
        "steps:\n  - key: unit\n    plugins:\n      - kubernetes:\n          podSpec: nope\n",
        ["step 'unit'", "kubernetes.podSpec", "must be an object"],
    ),
    "plugin-deep-wrong-type": (
        "steps:\n  - key: unit\n    plugins:\n      - kubernetes:\n"
        "          podSpec: {containers: [{image: alpine, resources: {limits: {cpu: lots}}}]}\n",
        ["step 'unit'", "kubernetes.podSpec.containers[0].resources.limits.cpu"],
    ),
    "invalid-image": (
        "steps:\n  - label: build\n    command: make\n    image: 'Not A Valid::Image'\n",
        ["step 'build'", "image", "invalid reference format"],
    ),
    "unknown-resource-class": (
        "steps:\n  - key: compile\n    command: make\n    agents: {resource_class: huge}\n",
        ["step 'compile'", "resource_class", "'huge' does not exist"],
    ),
    "forbidden-command-patch": (
        "steps:\n  - key: sneaky\n    command: make\n    plugins:\n      - kubernetes:\n"
        "          podSpecPatch: {containers: [{name: agent, command: [sh, -c, 'curl x | sh']}]}\n",
        ["step 'sneaky'", "kubernetes.podSpecPatch.containers[0].command", "not supported"],
    ),
    "reserved-annotation": (
        "steps:\n  - key: loop\n    command: make\n    plugins:\n      - kubernetes:\n"
        "          metadata: {annotations: {buildkite.com/failure-reported: x}}\n",
        ["step 'loop'", "kubernetes.metadata.annotations", "'buildkite.com/failure-reported' is reserved"],
    ),
    "reserved-label-in-patch": (
        "steps:\n  - key: hide\n    command: make\n    plugins:\n      - kubernetes:\n"
        "          podSpecPatch: {metadata: {labels: {buildkite.com/controller-id: other}}}\n",
        [
            "step 'hide'",
            "kubernetes.podSpecPatch.metadata.labels",
            "'buildkite.com/controller-id' is reserved",
        ],
    ),
    "bad-step-field": (
        "steps:\n  - key: shard\n    command: make\n    parallelism: many\n",
        ["step 'shard'", "parallelism"],
    ),
    "anonymous-step": ("steps:\n  - wait\n  - command: [1]\n", ["step 'steps[1]'", "command[0]"]),
}


@pytest.mark.parametrize(("text", "words"), BAD_PIPELINES.values(), ids=BAD_PIPELINES.keys())
def test_bad_pipelines_fail_naming_the_step_and_field(cli, write, text: str, words: list[str]) -> None:
    run = cli("render", write("bad.yml", text))
    assert run.code == 1
    assert run.out == ""
    assert run.err.startswith("buildkite-controller: ") and run.err.count("\n") == 1
    for word in words:
        assert word in run.err


@pytest.mark.parametrize(("text", "words"), BAD_PIPELINES.values(), ids=BAD_PIPELINES.keys())
def test_lint_reports_the_same_problems(cli, write, text: str, words: list[str]) -> None:
    run = cli("lint", write("bad.yml", text))
    assert run.code == 1
    for word in words:
        assert word in run.out


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("namespce: ci\n", ["'namespce'", "unknown key"]),
        (
            "resource-classes: {large: {resource: {requests: {cpu: lots}}}}\n",
            ["resource-classes.large", "cpu"],
        ),
        ("image: [1]\n", ["'image'"]),
        ("namespace: [\n", ["not valid YAML"]),
        ("- a list\n", ["mapping"]),
        (
            "default-metadata: {labels: {buildkite.com/job-uuid: x}}\n",
            ["default-metadata.labels", "'buildkite.com/job-uuid' is reserved"],
        ),
        (
            "pod-spec-patch: {metadata: {annotations: {buildkite.com/failure-reported: x}}}\n",
            ["pod-spec-patch.metadata.annotations", "'buildkite.com/failure-reported' is reserved"],
        ),
    ],
    ids=[
        "unknown-key",
        "bad-quantity",
        "wrong-type",
        "bad-yaml",
        "not-a-mapping",
        "reserved-default-metadata",
        "reserved-key-in-pod-spec-patch",
    ],
)
def test_a_bad_config_exits_2_naming_the_key(cli, write, config: str, words: list[str]) -> None:
    for command in ("render", "lint"):
        run = cli(command, str(EXAMPLES / "pipeline.yml"), "--config", write("config.yml", config))
        assert (run.code, run.out) == (2, "")
        for word in words:
            assert word in run.err


@pytest.mark.parametrize("command", ["render", "lint"])
def test_an_unreadable_pipeline_file_exits_2(cli, tmp_path: Path, command: str) -> None:
    (tmp_path / "binary.yml").write_bytes(b"\xff\xfe\x00steps")
    for path in (tmp_path / "absent.yml", tmp_path, tmp_path / "binary.yml"):
        run = cli(command, str(path))
        assert run.code == 2
        assert run.err.startswith(f"buildkite-controller: cannot read {path}")


# ---- lint --------------------------------------------------------------------------------------------------


def test_lint_lists_every_problem_of_a_file(cli, write) -> None:
    path = write(
        "two.yml",
        """
        steps:
          - key: first
            command: make
            plugins:
              - kubernetes:
                  bogusKey: 1
                  checkout: {nope: true}
                  podSpec:
                    containers: [{name: Bad_Name, image: golang:1.23}]
          - key: second
            command: [1]
            parallelism: 0
          - key: third
            command: make
            typo_attr: 1
        """,
    )
    run = cli("lint", path)
    assert run.code == 1
    lines = run.out.splitlines()
    expected = [
        "step 'first': kubernetes.bogusKey: unknown field",
        "step 'first': kubernetes.checkout.nope: unknown field",
        "step 'first': pod spec.containers[0].name: Invalid value",
        "step 'second': command[0]",
        "step 'second': parallelism",
        "step 'third': typo_attr: unknown step attribute",
    ]
    for fragment in expected:
        assert any(fragment in line for line in lines), fragment
    assert lines[-1] == "6 problems"
    assert all(line.startswith(path) for line in lines[:-1])


def test_unknown_plugin_keys_are_warnings_for_render_and_errors_for_lint(cli, write) -> None:
    path = write(
        "p.yml", "steps:\n  - key: k\n    command: make\n    plugins: [{kubernetes: {podSpek: {}}}]\n"
    )
    render = cli("render", path)
    assert render.code == 0
    assert "warning:" in render.err and "kubernetes.podSpek" in render.err
    lint = cli("lint", path)
    assert lint.code == 1
    assert "step 'k': kubernetes.podSpek: unknown field" in lint.out


def test_lint_reports_a_problem_of_a_parallel_step_once(cli, write) -> None:
    path = write(
        "p.yml", "steps:\n  - {key: k, command: make, parallelism: 4, plugins: [{kubernetes: {x: 1}}]}\n"
    )
    run = cli("lint", path)
    assert run.out.splitlines()[-1] == "1 problem"


def test_a_pipeline_without_command_steps_renders_nothing(cli, write) -> None:
    run = cli("render", write("p.yml", "steps: [wait, {block: go}]\n"))
    assert (run.code, run.out) == (0, "")
    assert "no command steps" in run.err


def test_the_installed_console_script_renders_the_default_example() -> None:
    script = Path(sys.executable).parent / "buildkite-controller"
    if not script.exists():
        # CI installs the package (as the README's set-up does), so there a missing script is a failure.
        assert not os.environ.get("CI"), f"{script} is missing: the install step did not run"
        pytest.skip("the package is not installed in this environment (pip install -e .)")
    done = subprocess.run(
        [str(script), "render", "examples/pipeline.yml"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert [pod["kind"] for pod in yaml.safe_load_all(done.stdout)] == ["Pod", "Pod"]


@pytest.mark.parametrize(
    "text",
    ["a\nb", "a\nb\n", "trailing \nspace", "\n  leading newline", "x\n\n\n", "tab\there\n", "#!/bin/sh\n:"],
)
def test_manifests_dump_multi_line_strings_so_they_read_back_exactly(text: str) -> None:
    manifest = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"script": text}}
    dumped = dump_manifests([manifest, manifest])
    assert list(yaml.safe_load_all(dumped)) == [manifest, manifest]
    assert dumped.count("---\n") == 2
