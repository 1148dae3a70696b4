"""A Buildkite pipeline file, expanded into the command jobs Buildkite would schedule (pure: text in).

Used by ``render`` and ``lint`` (``app/cli/render.py``) to show, offline, the pods a pipeline would get.
Each command step becomes one ``podspec.job.Job`` per parallel index, carrying the job data Buildkite
itself would send: ``BUILDKITE_PLUGINS`` as a JSON string whose keys are expanded plugin sources (the
step's ``kubernetes:`` becomes ``KUBERNETES_PLUGIN_KEY``), ``BUILDKITE_IMAGE`` from ``image:`` (the
step's beats the pipeline's), agent tags from ``agents:`` (the pipeline's merged under the step's),
the merged ``env``, and placeholder build data (URL, branch, repo) so annotations look real. Job UUIDs
are uuid5 of the file name and the step's position, so the same file always renders the same pods.

Group steps are flattened; ``wait``/``block``/``input``/``trigger`` steps schedule no pod and are
skipped. Problems are ``PipelineError(step, field, message)``; ``read_pipeline`` collects every one
(for ``lint``) and keeps going with the other steps. The module reads in data order: document →
steps → one step's fields → jobs.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from app.cli.pipeline_fields import STEP_READERS, FieldError, agents, describe, env, image, plugin_notes
from podspec.job import Job

# Expanding YAML aliases can multiply a small file into a huge value ("billion laughs"); a real
# pipeline has a few thousand nodes, so these bounds only stop hostile or broken input.
MAX_NODES = 200_000
MAX_DEPTH = 64
UUID_NAMESPACE = uuid.UUID("6f3a1a52-0c55-4b1f-9a0e-3a5f2f5d0b7e")
NON_COMMAND_STEPS = frozenset({"wait", "waiter", "block", "input", "manual", "trigger"})
COMMAND_KEYS = frozenset(
    {
        "agents", "allow_dependency_failure", "artifact_paths", "branches", "cache",
        "cancel_on_build_failing", "command", "commands", "concurrency", "concurrency_group",
        "concurrency_method", "depends_on", "env", "id", "identifier", "if", "if_changed", "image",
        "key", "label", "matrix", "name", "notify", "parallelism", "plugins", "priority", "retry",
        "secrets", "signature", "skip", "soft_fail", "timeout_in_minutes", "type",
    }
)  # fmt: skip
PIPELINE_KEYS = frozenset({"steps", "env", "agents", "image", "notify", "secrets", "priority"})


class PipelineError(ValueError):
    """A pipeline problem. ``step`` names the step (key, else label, else ``steps[i]``; ``""`` for the
    pipeline itself) and ``field`` the offending attribute path, e.g. ``plugins[0].kubernetes``."""

    def __init__(self, step: str, field: str, message: str) -> None:
        self.step = step
        self.field = field
        self.message = message
        where = f"step {step!r}: " if step else ""
        super().__init__(f"{where}{field}: {message}" if field else f"{where}{message}")


@dataclass(frozen=True, slots=True)
class StepJob:
    """One job of a command step: ``step`` names it as errors do; ``key``/``label`` may be empty."""

    step: str
    path: str
    key: str
    label: str
    job: Job


@dataclass(frozen=True, slots=True)
class Expansion:
    """Every job the file yields, every error, and lint-only notes (e.g. unknown step attributes)."""

    jobs: tuple[StepJob, ...] = ()
    errors: tuple[PipelineError, ...] = ()
    warnings: tuple[PipelineError, ...] = ()


@dataclass(slots=True)
class _Defaults:
    """Pipeline-level values every step inherits."""

    slug: str
    file_name: str
    queue: str | None
    env: dict[str, str] = field(default_factory=dict)
    agents: dict[str, str] = field(default_factory=dict)
    image: str | None = None


def read_pipeline(text: str, *, file_name: str, queue: str | None = None) -> Expansion:
    """Expand a pipeline file's text; never raises for bad input (see ``Expansion.errors``)."""
    try:
        document = _load(text)
        steps = _top_level_steps(document)
    except FieldError as exc:
        return Expansion(errors=(PipelineError("", exc.field, exc.message),))
    top = document if isinstance(document, dict) else {}
    # The base name only: the same file renders the same UUIDs from any directory.
    base_name = re.split(r"[\\/]", file_name)[-1]
    defaults = _Defaults(slug=pipeline_slug(file_name), file_name=base_name, queue=queue)
    errors: list[PipelineError] = []
    warnings = [
        PipelineError("", str(key), "unknown pipeline attribute") for key in top if key not in PIPELINE_KEYS
    ]
    for name, reader in (("env", env), ("agents", agents), ("image", image)):
        try:
            setattr(defaults, name, reader(top.get(name), name))
        except FieldError as exc:
            errors.append(PipelineError("", exc.field, exc.message))
    jobs: list[StepJob] = []
    for path, raw in _flatten(steps, "steps", errors):
        _expand_step(raw, path, defaults, jobs=jobs, errors=errors, warnings=warnings)
    return Expansion(tuple(jobs), tuple(errors), tuple(warnings))


def expand_pipeline(text: str, *, file_name: str, queue: str | None = None) -> tuple[StepJob, ...]:
    """Like ``read_pipeline`` but raises the first ``PipelineError`` (for ``render``)."""
    expansion = read_pipeline(text, file_name=file_name, queue=queue)
    if expansion.errors:
        raise expansion.errors[0]
    return expansion.jobs


def select_step(jobs: tuple[StepJob, ...], step: str) -> tuple[StepJob, ...]:
    """The jobs of the step whose key (else label) is ``step``."""
    chosen = tuple(job for job in jobs if job.key == step) or tuple(job for job in jobs if job.label == step)
    if not chosen:
        known = ", ".join(sorted({job.key or job.label or job.path for job in jobs})) or "none"
        raise PipelineError("", "step", f"no command step has key or label {step!r} (steps: {known})")
    return chosen


def with_uuid(step_job: StepJob, job_uuid: str) -> StepJob:
    """The same job under a caller-chosen UUID (``render --job-uuid``)."""
    try:
        canonical = str(uuid.UUID(job_uuid))
    except ValueError:
        raise PipelineError("", "job-uuid", f"{job_uuid!r} is not a UUID") from None
    env = {**step_job.job.env, "BUILDKITE_JOB_ID": canonical}
    return replace(step_job, job=replace(step_job.job, uuid=canonical, env=env))


def pipeline_slug(file_name: str) -> str:
    """``.buildkite/Deploy Pipeline.yml`` → ``deploy-pipeline`` (the slug Buildkite would derive)."""
    stem = re.split(r"[\\/]", file_name)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "pipeline"


# ---- document -----------------------------------------------------------------------------------------


def _load(text: str) -> Any:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FieldError("yaml", f"not valid YAML: {problem}{where}") from None
    except RecursionError:
        raise FieldError("yaml", "nested too deeply") from None
    return _plain(document, [0], 0)


def _plain(value: Any, budget: list[int], depth: int) -> Any:
    """A JSON-ready copy of the YAML value; aliases are expanded under a node budget."""
    budget[0] += 1
    if budget[0] > MAX_NODES or depth > MAX_DEPTH:
        raise FieldError(
            "yaml", f"too large or too deeply nested once aliases are expanded (> {MAX_NODES} values)"
        )
    if isinstance(value, dict):
        return {_key(k): _plain(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, budget, depth + 1) for v in value]
    if isinstance(value, datetime.date):
        return value.isoformat()  # Buildkite's YAML reads timestamps as strings
    if isinstance(value, bytes):
        raise FieldError("yaml", "binary (!!binary) values are not supported")
    return value


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    if isinstance(key, int | float | datetime.date):
        return str(key)
    raise FieldError("yaml", f"mapping keys must be strings (got {type(key).__name__})")


def _top_level_steps(document: Any) -> list[Any]:
    if isinstance(document, list):  # Buildkite accepts a bare list of steps
        return document
    if not isinstance(document, dict):
        raise FieldError("steps", f"the file must be a mapping with a steps: list (got {describe(document)})")
    steps = document.get("steps")
    if not isinstance(steps, list):
        raise FieldError("steps", f"must be a list of steps (got {describe(steps)})")
    return steps


def _flatten(steps: list[Any], prefix: str, errors: list[PipelineError]) -> Iterator[tuple[str, Any]]:
    for index, raw in enumerate(steps):
        path = f"{prefix}[{index}]"
        if isinstance(raw, dict) and "group" in raw:
            nested = raw.get("steps")
            if not isinstance(nested, list) or prefix != "steps":
                why = (
                    "groups cannot be nested"
                    if prefix != "steps"
                    else f"must be a list (got {describe(nested)})"
                )
                errors.append(PipelineError(_step_name(raw, path), "steps", why))
                continue
            yield from _flatten(nested, f"{path}.steps", errors)
        else:
            yield path, raw


# ---- one step -------------------------------------------------------------------------------------------


def _expand_step(
    raw: Any,
    path: str,
    defaults: _Defaults,
    *,
    jobs: list[StepJob],
    errors: list[PipelineError],
    warnings: list[PipelineError],
) -> None:
    name = _step_name(raw, path)
    kind = _step_kind(raw)
    if kind is None:
        errors.append(PipelineError(name, "", f"not a known step type (got {describe(raw)})"))
        return
    if kind != "command":
        return
    warnings.extend(
        PipelineError(name, key, "unknown step attribute") for key in raw if key not in COMMAND_KEYS
    )
    if isinstance(raw.get("plugins"), dict | list):
        warnings.extend(PipelineError(name, note.field, note.message) for note in plugin_notes(raw))
    fields: dict[str, Any] = {}
    before = len(errors)
    for attr, reader in STEP_READERS:
        try:
            fields[attr] = reader(raw)
        except FieldError as exc:
            errors.append(PipelineError(name, exc.field, exc.message))
    if len(errors) == before:
        jobs.extend(_jobs(raw, path, name, defaults, fields))


def _step_kind(raw: Any) -> str | None:
    if isinstance(raw, str):
        return "other" if raw in NON_COMMAND_STEPS else None
    if not isinstance(raw, dict):
        return None
    declared = raw.get("type")
    if declared in NON_COMMAND_STEPS or NON_COMMAND_STEPS & raw.keys():
        return "other"
    if declared in ("command", "script") or {"command", "commands", "plugins"} & raw.keys():
        return "command"
    return None


def _step_name(raw: Any, path: str) -> str:
    if isinstance(raw, dict):
        for attr in ("key", "id", "identifier", "label", "name", "group"):
            name = raw.get(attr)
            if isinstance(name, str) and name:
                return name
    return path


def _jobs(
    raw: dict[str, Any], path: str, name: str, defaults: _Defaults, fields: dict[str, Any]
) -> list[StepJob]:
    key, label, count = fields["key"], fields["label"], fields["parallelism"]
    env = {**defaults.env, **fields["env"]}
    system = {
        "BUILDKITE_COMMAND": fields["command"],
        "BUILDKITE_LABEL": label,
        "BUILDKITE_PIPELINE_SLUG": defaults.slug,
        "BUILDKITE_ORGANIZATION_SLUG": "example",
        "BUILDKITE_BUILD_NUMBER": "1",
        "BUILDKITE_BUILD_URL": f"https://buildkite.com/example/{defaults.slug}/builds/1",
        "BUILDKITE_BRANCH": "main",
        "BUILDKITE_REPO": f"git@github.com:example/{defaults.slug}.git",
        "BUILDKITE_COMMIT": "HEAD",
    }
    if key:
        system["BUILDKITE_STEP_KEY"] = key
    if fields["plugins"] is not None:
        system["BUILDKITE_PLUGINS"] = fields["plugins"]
    image = fields["image"] or defaults.image
    if image:
        system["BUILDKITE_IMAGE"] = image
    tags = {**defaults.agents, **fields["agents"]}
    if defaults.queue and "queue" not in tags:
        tags["queue"] = defaults.queue
    out = []
    for index in range(count):
        job_uuid = str(uuid.uuid5(UUID_NAMESPACE, f"{defaults.file_name}#{path}#{index}"))
        job_env = {**env, **system, "BUILDKITE_JOB_ID": job_uuid}
        if count > 1:
            job_env |= {"BUILDKITE_PARALLEL_JOB": str(index), "BUILDKITE_PARALLEL_JOB_COUNT": str(count)}
        job = Job(job_uuid, fields["command"], job_env, dict(tags), fields["priority"])
        out.append(StepJob(step=name, path=path, key=key, label=label, job=job))
    return out
