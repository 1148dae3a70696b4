"""``render`` and ``lint``: the pods a pipeline file would get, offline, without Buildkite or a cluster.

Input: a pipeline YAML file (expanded into jobs by ``app.cli.pipeline``), optionally the controller's
config file (read exactly as ``serve`` reads it, so ``render`` shows the pods that controller would
create) and PodTemplate manifests for steps that name a ``podTemplate`` (the cluster is not reachable
from here). Each job goes through ``podspec.build``, the same pure builder the controller uses.

``render`` prints one Pod manifest per job as multi-document YAML and stops at the first problem.
``lint`` is strict: it reports every problem it finds — pipeline errors, unknown step attributes,
unknown plugin keys (only warnings at run time) and what the apiserver would refuse — then exits 1.

Exit codes: 0 fine; 1 the pipeline has a problem; 2 bad usage, unreadable file or bad config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from app.cli.pipeline import PipelineError, StepJob, expand_pipeline, read_pipeline, select_step, with_uuid
from app.config import load
from app.errors import ConfigInvalid
from podspec import BuildError, BuiltPod, PodConfig, build, pod_template_name

PROG = "buildkite-controller"


def add_render_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``render`` and ``lint`` to the CLI's subcommands (called by ``app.cli.build_parser``)."""
    render = subparsers.add_parser("render", help="print the Pod manifests a pipeline's command steps get")
    _common_arguments(render)
    render.add_argument("--queue", help="queue for steps whose agents: name none")
    render.add_argument("--step", metavar="KEY", help="render only the step with this key (or label)")
    render.add_argument("--job-uuid", metavar="UUID", help="job UUID to use (one job only)")
    render.set_defaults(handler=run_render)
    lint = subparsers.add_parser("lint", help="report every problem in a pipeline's kubernetes config")
    _common_arguments(lint)
    lint.set_defaults(handler=run_lint)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", metavar="PIPELINE.yml", help="Buildkite pipeline file")
    parser.add_argument("-f", "--config", metavar="CONFIG.yml", help="controller config file")
    parser.add_argument(
        "--pod-template",
        metavar="NAME=FILE.yml",
        action="append",
        default=[],
        help="a PodTemplate manifest for steps with podTemplate: NAME (repeatable)",
    )


def run_render(namespace: argparse.Namespace) -> int:
    try:
        config, templates, text = _inputs(namespace)
    except Unreadable as exc:
        _err(f"{PROG}: {exc}")
        return 2
    try:
        jobs = _selected_jobs(namespace, text)
        built = [(job, _build(job, config=config, templates=templates)) for job in jobs]
    except PipelineError as exc:
        _err(f"{PROG}: {namespace.pipeline}: {exc}")
        return 1
    if not built:
        _err(f"note: {namespace.pipeline}: no command steps, so no pods")
    warnings = (
        f"warning: {namespace.pipeline}: step {job.step!r}: {w}" for job, pod in built for w in pod.warnings
    )
    for warning in dict.fromkeys(warnings):  # parallel jobs of one step share their warnings
        _err(warning)
    sys.stdout.write(dump_manifests([pod.manifest for _, pod in built]))
    return 0


def run_lint(namespace: argparse.Namespace) -> int:
    try:
        config, templates, text = _inputs(namespace)
    except Unreadable as exc:
        _err(f"{PROG}: {exc}")
        return 2
    expansion = read_pipeline(text, file_name=namespace.pipeline)
    problems = [str(problem) for problem in (*expansion.errors, *expansion.warnings)]
    for job in expansion.jobs:
        problems.extend(_lint_job(job, config=config, templates=templates, file_name=namespace.pipeline))
    unique = list(dict.fromkeys(problems))  # parallel jobs of one step share their problems
    for problem in unique:
        print(f"{namespace.pipeline}: {problem}")
    if unique:
        print(f"{len(unique)} problem{'s' if len(unique) > 1 else ''}")
        return 1
    print("ok")
    return 0


def dump_manifests(manifests: list[dict[str, Any]]) -> str:
    """Multi-document YAML, one ``---`` document per manifest, scripts as readable blocks."""
    if not manifests:
        return ""
    return yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=100)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (checkout and copy-agent scripts, commands) as ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_str)


# ---- inputs ----------------------------------------------------------------------------------------------


class Unreadable(Exception):
    """A file named on the command line cannot be read (exit 2)."""


def _inputs(namespace: argparse.Namespace) -> tuple[PodConfig, dict[str, dict[str, Any]], str]:
    """Config, PodTemplates and pipeline text; config problems are ``ConfigInvalid`` (``app.cli`` exits 2)."""
    config = load_pod_config(namespace.config)
    templates = load_pod_templates(namespace.pod_template)
    return config, templates, _read_text(namespace.pipeline)


def load_pod_config(path: str | None) -> PodConfig:
    """The pod section of the controller config, loaded the way ``serve`` loads it.

    The environment is left out on purpose: the same files must always render the same pods.
    """
    loaded = load(flags={}, env={}, config_file=path)
    for warning in loaded.warnings:
        _err(f"warning: {warning}")
    return loaded.settings.pod


def load_pod_templates(values: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME=FILE.yml`` → ``{NAME: .template.spec}``; the file holds a PodTemplate manifest."""
    templates = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigInvalid("pod-template", f"{value!r} must look like NAME=FILE.yml")
        templates[name] = _template_spec(name, path)
    return templates


def _template_spec(name: str, path: str) -> dict[str, Any]:
    try:
        manifest = yaml.safe_load(_read_text(path))
    except Unreadable as exc:
        raise ConfigInvalid(f"pod-template {name}", str(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigInvalid(f"pod-template {name}", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("kind", "PodTemplate") != "PodTemplate":
        raise ConfigInvalid(f"pod-template {name}", f"{path} must hold a PodTemplate manifest")
    spec = (
        (manifest.get("template") or {}).get("spec") if isinstance(manifest.get("template"), dict) else None
    )
    if not isinstance(spec, dict):
        raise ConfigInvalid(f"pod-template {name}", f"{path} has no template.spec mapping")
    return spec


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise Unreadable(f"cannot read {path}: {reason}") from None


# ---- jobs -> pods ------------------------------------------------------------------------------------


def _selected_jobs(namespace: argparse.Namespace, text: str) -> tuple[StepJob, ...]:
    jobs = expand_pipeline(text, file_name=namespace.pipeline, queue=namespace.queue)
    if namespace.step is not None:
        jobs = select_step(jobs, namespace.step)
    if namespace.job_uuid is not None:
        if len(jobs) != 1:
            raise PipelineError("", "job-uuid", f"names one job but {len(jobs)} are selected; add --step KEY")
        jobs = (with_uuid(jobs[0], namespace.job_uuid),)
    return jobs


def _build(
    job: StepJob,
    *,
    config: PodConfig,
    templates: dict[str, dict[str, Any]],
    on_missing_template: Callable[[str], dict[str, Any]] | None = None,
) -> BuiltPod:
    """``podspec.build`` for one job; a ``BuildError`` becomes a ``PipelineError`` naming the step."""
    try:
        spec = None
        name = pod_template_name(job.job)
        if name is not None:
            spec = templates.get(name)
            if spec is None and on_missing_template is not None:
                spec = on_missing_template(name)
            elif spec is None:
                raise BuildError(
                    "kubernetes.podTemplate",
                    f"PodTemplate {name!r} lives in the cluster, which render cannot read; "
                    f"pass --pod-template {name}=FILE.yml",
                )
        return build(job.job, config=config, pod_template_spec=spec)
    except BuildError as exc:
        raise PipelineError(job.step, exc.field, exc.message) from None


def _lint_job(
    job: StepJob, *, config: PodConfig, templates: dict[str, dict[str, Any]], file_name: str
) -> list[str]:
    """Every problem of one job. The build runs lenient and every warning counts as a problem, which
    lists all unknown plugin keys where ``strict=True`` would stop at the first."""

    def missing(name: str) -> dict[str, Any]:
        # Without the cluster the template's content is unknown; check everything else around it.
        _err(f"note: {file_name}: step {job.step!r}: PodTemplate {name!r} not checked (pass --pod-template)")
        return {}

    try:
        pod = _build(job, config=config, templates=templates, on_missing_template=missing)
    except PipelineError as exc:
        return [str(exc)]
    problems = [
        str(PipelineError(job.step, "", warning.replace(", ignored", ""))) for warning in pod.warnings
    ]
    return problems + [
        str(PipelineError(job.step, f"pod {field}", message)) for field, message in _refusals(pod)
    ]


def _refusals(pod: BuiltPod) -> list[tuple[str, str]]:
    """What kube-apiserver would refuse in the manifest (skipped without the ``simulate`` extra)."""
    try:
        from app.simulate.kube_validation import validate_pod
    except ImportError:  # kubernetes-validate is an optional dependency
        return []
    return [(cause.field, cause.message) for cause in validate_pod(pod.manifest)]


def _err(message: str) -> None:
    print(message, file=sys.stderr)
