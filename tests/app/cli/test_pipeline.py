"""Expanding a pipeline file into the jobs Buildkite would schedule (``app.cli.pipeline``)."""

from __future__ import annotations

import json
import textwrap
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cli.pipeline import (
    Expansion,
    PipelineError,
    StepJob,
    expand_pipeline,
    pipeline_slug,
    read_pipeline,
    select_step,
    with_uuid,
)
from app.cli.pipeline_fields import plugin_source
from podspec.job import KUBERNETES_PLUGIN_KEY


def expand(text: str, **kwargs: object) -> tuple[StepJob, ...]:
    return expand_pipeline(textwrap.dedent(text), file_name=str(kwargs.pop("file_name", "ci.yml")), **kwargs)


def read(text: str) -> Expansion:
    return read_pipeline(textwrap.dedent(text), file_name="ci.yml")


def plugins_of(job: StepJob) -> list[dict[str, object]]:
    return json.loads(job.job.env["BUILDKITE_PLUGINS"])


@pytest.mark.parametrize(
    ("written", "expanded"),
    [
        ("kubernetes", KUBERNETES_PLUGIN_KEY),
        ("docker#v5.11.0", "github.com/buildkite-plugins/docker-buildkite-plugin#v5.11.0"),
        ("docker-compose", "github.com/buildkite-plugins/docker-compose-buildkite-plugin"),
        ("my-org/cache#v1", "github.com/my-org/cache-buildkite-plugin#v1"),
        ("my-org/cache-buildkite-plugin#v1", "github.com/my-org/cache-buildkite-plugin#v1"),
        ("github.com/org/x-buildkite-plugin#v2", "github.com/org/x-buildkite-plugin#v2"),
        ("https://git.example.com/x.git#main", "https://git.example.com/x.git#main"),
        ("ssh://git@github.com/org/x.git#v1", "ssh://git@github.com/org/x.git#v1"),
        ("git@github.com:org/x.git#v1", "git@github.com:org/x.git#v1"),
        ("./.buildkite/plugins/local", "./.buildkite/plugins/local"),
    ],
    ids=lambda value: value,
)
def test_plugin_names_expand_to_the_sources_buildkite_sends(written: str, expanded: str) -> None:
    assert plugin_source(written) == expanded


@pytest.mark.parametrize(
    "plugins",
    [
        "\n      - kubernetes: {podSpec: {containers: [{image: alpine}]}}\n      - docker#v5: {image: x}",
        "\n      kubernetes: {podSpec: {containers: [{image: alpine}]}}\n      docker#v5: {image: x}",
    ],
    ids=["list-form", "map-form"],
)
def test_plugins_become_a_json_list_of_single_key_objects(plugins: str) -> None:
    (job,) = expand(f"steps:\n  - command: make\n    plugins:{plugins}\n")
    assert plugins_of(job) == [
        {KUBERNETES_PLUGIN_KEY: {"podSpec": {"containers": [{"image": "alpine"}]}}},
        {"github.com/buildkite-plugins/docker-buildkite-plugin#v5": {"image": "x"}},
    ]


def test_a_plugin_without_config_is_sent_with_null_config() -> None:
    (job,) = expand("steps:\n  - command: make\n    plugins: [docker-login#v3, {kubernetes: ~}]\n")
    assert plugins_of(job) == [
        {"github.com/buildkite-plugins/docker-login-buildkite-plugin#v3": None},
        {KUBERNETES_PLUGIN_KEY: None},
    ]


def test_a_step_without_plugins_has_no_buildkite_plugins_variable() -> None:
    (job,) = expand("steps:\n  - command: make\n")
    assert "BUILDKITE_PLUGINS" not in job.job.env


@pytest.mark.parametrize(
    ("pipeline_image", "step_image", "expected"),
    [
        (None, None, None),
        ("alpine:3.20", None, "alpine:3.20"),
        (None, "golang:1.23", "golang:1.23"),
        ("alpine:3.20", "golang:1.23", "golang:1.23"),
    ],
    ids=["none", "pipeline-only", "step-only", "step-beats-pipeline"],
)
def test_image_of_the_step_beats_the_image_of_the_pipeline(
    pipeline_image: str | None, step_image: str | None, expected: str | None
) -> None:
    top = f"image: {pipeline_image}\n" if pipeline_image else ""
    step = f"    image: {step_image}\n" if step_image else ""
    (job,) = expand(f"{top}steps:\n  - command: make\n{step}")
    assert job.job.env.get("BUILDKITE_IMAGE") == expected


@pytest.mark.parametrize(
    ("pipeline_agents", "step_agents", "queue", "expected"),
    [
        ("{queue: k8s, os: linux}", "{os: mac}", None, {"queue": "k8s", "os": "mac"}),
        (None, "[queue=gpu, resource_class=large]", None, {"queue": "gpu", "resource_class": "large"}),
        (None, None, "kubernetes", {"queue": "kubernetes"}),
        ("{queue: build}", None, "kubernetes", {"queue": "build"}),
        (None, "{queue: own}", "kubernetes", {"queue": "own"}),
        (None, "{spot: true, cores: 8}", None, {"spot": "true", "cores": "8"}),
        (None, None, None, {}),
    ],
    ids=[
        "step-over-pipeline",
        "list-form",
        "queue-flag-fills-in",
        "queue-flag-loses-to-pipeline",
        "queue-flag-loses-to-step",
        "scalars-become-strings",
        "no-tags",
    ],
)
def test_agent_tags_merge_pipeline_under_step_and_queue_flag_fills_the_gap(
    pipeline_agents: str | None, step_agents: str | None, queue: str | None, expected: dict[str, str]
) -> None:
    top = f"agents: {pipeline_agents}\n" if pipeline_agents else ""
    step = f"    agents: {step_agents}\n" if step_agents else ""
    (job,) = expand(f"{top}steps:\n  - command: make\n{step}", queue=queue)
    assert dict(job.job.agent_tags) == expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("command: make test", "make test"),
        ("commands: [make, make test]", "make\nmake test"),
        ("command: [go vet ./..., go test ./...]", "go vet ./...\ngo test ./..."),
        ("command: |\n      set -e\n      make", "set -e\nmake\n"),
        ("plugins: [{kubernetes: {}}]", ""),
    ],
    ids=["string", "commands-list", "command-list", "block", "plugins-only"],
)
def test_commands_join_into_buildkite_command(command: str, expected: str) -> None:
    (job,) = expand(f"steps:\n  - {command}\n")
    assert job.job.command == expected
    assert job.job.env["BUILDKITE_COMMAND"] == expected


def test_parallelism_gives_one_job_per_index_with_distinct_uuids() -> None:
    jobs = expand("steps:\n  - key: shard\n    command: make test\n    parallelism: 3\n")
    assert [job.job.env["BUILDKITE_PARALLEL_JOB"] for job in jobs] == ["0", "1", "2"]
    assert {job.job.env["BUILDKITE_PARALLEL_JOB_COUNT"] for job in jobs} == {"3"}
    assert len({job.job.uuid for job in jobs}) == 3
    assert all(job.step == "shard" for job in jobs)


def test_a_single_job_step_has_no_parallel_variables() -> None:
    (job,) = expand("steps:\n  - command: make\n    parallelism: 1\n")
    assert "BUILDKITE_PARALLEL_JOB" not in job.job.env


def test_groups_are_flattened_and_non_command_steps_are_skipped() -> None:
    jobs = expand(
        """
        steps:
          - command: one
          - wait
          - wait: ~
          - block: ":rocket: release?"
          - input: "details"
          - trigger: other-pipeline
          - type: wait
          - group: ":test_tube: tests"
            key: tests
            steps:
              - command: two
              - wait
              - label: three
                command: three
        """
    )
    assert [(job.path, job.job.command) for job in jobs] == [
        ("steps[0]", "one"),
        ("steps[7].steps[0]", "two"),
        ("steps[7].steps[2]", "three"),
    ]


def test_env_merges_pipeline_under_step_and_buildkite_variables_win() -> None:
    (job,) = expand(
        """
        env: {A: pipeline, B: pipeline, N: 1}
        steps:
          - key: unit
            label: ":go: unit"
            command: make
            priority: 5
            env: {B: step, FLAG: true, BUILDKITE_LABEL: forged}
        """,
        file_name=".buildkite/Deploy Service.yml",
    )
    env = job.job.env
    assert (env["A"], env["B"], env["N"], env["FLAG"]) == ("pipeline", "step", "1", "true")
    assert env["BUILDKITE_LABEL"] == ":go: unit"
    assert env["BUILDKITE_STEP_KEY"] == "unit"
    assert env["BUILDKITE_PIPELINE_SLUG"] == "deploy-service"
    assert env["BUILDKITE_BUILD_URL"] == "https://buildkite.com/example/deploy-service/builds/1"
    assert env["BUILDKITE_JOB_ID"] == job.job.uuid
    assert job.job.priority == 5


def test_job_uuids_are_deterministic_per_file_and_step() -> None:
    text = "steps:\n  - command: a\n  - command: b\n"
    first = expand(text)
    assert [job.job.uuid for job in first] == [job.job.uuid for job in expand(text)]
    assert first[0].job.uuid != first[1].job.uuid
    assert first[0].job.uuid != expand(text, file_name="other.yml")[0].job.uuid
    assert all(uuid.UUID(job.job.uuid) for job in first)


@pytest.mark.parametrize(
    ("text", "step", "field", "words"),
    [
        ("steps: [\n", "", "yaml", "line 2"),
        ("steps: 3\n", "", "steps", "must be a list"),
        ("just a string\n", "", "steps", "mapping"),
        ("env: [1]\nsteps: []\n", "", "env", "mapping"),
        ("agents: 3\nsteps: []\n", "", "agents", "mapping or a list"),
        ("image: 3\nsteps: []\n", "", "image", "image reference"),
        ("steps:\n  - {key: k, command: make, env: {A: [1]}}\n", "k", "env.A", "string, number"),
        ("steps:\n  - {label: L, command: [make, 3]}\n", "L", "command[1]", "string"),
        ("steps:\n  - {command: a, commands: b}\n", "steps[0]", "commands", "not both"),
        ("steps:\n  - {key: p, command: a, parallelism: 0}\n", "p", "parallelism", "1 to"),
        ("steps:\n  - {key: p, command: a, parallelism: true}\n", "p", "parallelism", "integer"),
        ("steps:\n  - {key: p, command: a, priority: high}\n", "p", "priority", "integer"),
        ("steps:\n  - {key: p, command: a, plugins: docker}\n", "p", "plugins", "list"),
        ("steps:\n  - {key: p, command: a, plugins: [{a: 1, b: 2}]}\n", "p", "plugins[0]", "exactly one"),
        ("steps:\n  - {key: p, command: a, agents: [[q]]}\n", "p", "agents[0]", "key=value"),
        ("steps:\n  - {key: p, command: a, matrix: [a, b]}\n", "p", "matrix", "one step per"),
        ("steps:\n  - {key: p, command: a, label: [x]}\n", "p", "label", "string"),
        ("steps:\n  - {key: g, group: g, steps: 3}\n", "g", "steps", "list"),
        ("steps:\n  - {group: a, steps: [{group: b, steps: []}]}\n", "b", "steps", "nested"),
        ("steps:\n  - hello\n", "steps[0]", "", "not a known step type"),
        ("steps:\n  - 42\n", "steps[0]", "", "not a known step type"),
        ("steps:\n  - {foo: bar}\n", "steps[0]", "", "not a known step type"),
        ("steps:\n  - command: !!binary aGk=\n", "", "yaml", "binary"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 else None,
)
def test_bad_pipelines_name_the_step_and_the_field(text: str, step: str, field: str, words: str) -> None:
    with pytest.raises(PipelineError) as caught:
        expand_pipeline(text, file_name="ci.yml")
    assert (caught.value.step, caught.value.field) == (step, field)
    assert words in caught.value.message


def test_every_problem_is_collected_and_good_steps_still_expand() -> None:
    expansion = read(
        """
        env: [nope]
        steps:
          - {key: a, command: make, env: 3, parallelism: -1}
          - {key: b, command: ok}
          - {key: c, command: [1], colour: red}
        """
    )
    assert [(e.step, e.field) for e in expansion.errors] == [
        ("", "env"),
        ("a", "env"),
        ("a", "parallelism"),
        ("c", "command[0]"),
    ]
    assert [job.step for job in expansion.jobs] == ["b"]
    assert [(w.step, w.field) for w in expansion.warnings] == [("c", "colour")]


def test_unknown_pipeline_attributes_and_versioned_kubernetes_plugin_are_noted() -> None:
    expansion = read("stepz: []\nsteps:\n  - {key: k, command: a, plugins: [{kubernetes#v1: {}}]}\n")
    assert [(w.step, w.field) for w in expansion.warnings] == [("", "stepz"), ("k", "plugins[0]")]
    assert not expansion.errors


@pytest.mark.parametrize(
    "text",
    [
        # Each level of aliases multiplies the size by 9 ("billion laughs").
        'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + "".join(
            f"{b}: &{b} [{', '.join([f'*{p}'] * 9)}]\n" for p, b in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + "steps:\n  - command: make\n    plugins: [{kubernetes: {podSpec: *i}}]\n",
        "a: &a [*a]\nsteps: []\n",
        "steps: " + "[" * 500 + "]" * 500 + "\n",
    ],
    ids=["billion-laughs", "recursive-alias", "deep-nesting"],
)
def test_hostile_yaml_is_refused_quickly(text: str) -> None:
    expansion = read_pipeline(text, file_name="ci.yml")
    assert [e.field for e in expansion.errors] == ["yaml"]


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_jobs_or_errors_never_an_exception(text: str) -> None:
    expansion = read_pipeline(text, file_name="ci.yml")
    assert all(isinstance(error, PipelineError) for error in expansion.errors)


_yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(["command", "env", "agents", "plugins", "image", "key",
                                               "parallelism", "priority", "label", "group", "steps"])),
                       _yaml_values, max_size=6))  # fmt: skip
def test_any_step_shape_gives_well_typed_jobs_or_errors(step: dict[str, object]) -> None:
    expansion = read_pipeline(json.dumps({"steps": [step]}), file_name="ci.yml")
    for item in expansion.jobs:
        assert all(isinstance(v, str) for v in [*item.job.env.values(), *item.job.agent_tags.values()])
        plugins = json.loads(item.job.env.get("BUILDKITE_PLUGINS", "[]"))
        assert all(isinstance(entry, dict) and len(entry) == 1 for entry in plugins)


def test_select_step_by_key_then_label() -> None:
    jobs = expand("steps:\n  - {key: unit, command: a}\n  - {label: lint, command: b}\n")
    assert [job.job.command for job in select_step(jobs, "unit")] == ["a"]
    assert [job.job.command for job in select_step(jobs, "lint")] == ["b"]
    with pytest.raises(PipelineError, match=r"'nope'.*lint, unit"):
        select_step(jobs, "nope")


def test_with_uuid_renames_the_job_and_its_job_id() -> None:
    (job,) = expand("steps:\n  - command: a\n")
    chosen = "0190a1b2-c3d4-4e5f-8a9b-0c1d2e3f4a5b"
    renamed = with_uuid(job, chosen.upper())
    assert renamed.job.uuid == chosen
    assert renamed.job.env["BUILDKITE_JOB_ID"] == chosen
    with pytest.raises(PipelineError, match="not a UUID"):
        with_uuid(job, "../../etc/passwd")


@pytest.mark.parametrize(
    ("file_name", "slug"),
    [
        ("pipeline.yml", "pipeline"),
        (".buildkite/Deploy Service.yaml", "deploy-service"),
        ("C:\\ci\\My_App.yml", "my-app"),
        ("___.yml", "pipeline"),
    ],
)
def test_pipeline_slug_comes_from_the_file_name(file_name: str, slug: str) -> None:
    assert pipeline_slug(file_name) == slug
