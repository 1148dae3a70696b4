"""What each simulated container does: run for some ticks, exit with a code, get OOM-killed, fail to pull.

A `ContainerScript` comes from, in order of precedence: the pod annotation
`kubelet.simulate/container.<name>` (e.g. `"exit=1 ticks=3"`), the first `ImageRule` whose glob matches
the container's image, or the default. The annotation `kubelet.simulate/evict-after-ticks: "N"` evicts
the pod N ticks after the kubelet first sees it. Annotations come from pod manifests, so a malformed one
raises `ScriptError` (the kubelet reports it as a Warning event and falls back to the default).

Annotation tokens (space or comma separated): `ticks=N` (run N ticks), `forever` (run until deleted),
`exit=N`, `oom` (terminated with reason OOMKilled, exit 137), `pull-fail` (ErrImagePull/ImagePullBackOff).
What a container prints (its log, served by the fake apiserver's `pods/{name}/log`): `log=N` writes N
numbered lines (`<container> line i of N`), then each `say=<text>` one line, in order; `<text>` is
percent-decoded (`say=token%3D%20abc` prints `token= abc`), so it may hold spaces, commas or bytes.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote_to_bytes

ANNOTATION_PREFIX = "kubelet.simulate/"
CONTAINER_KEY = ANNOTATION_PREFIX + "container."
EVICT_KEY = ANNOTATION_PREFIX + "evict-after-ticks"


class ScriptError(ValueError):
    """A simulation annotation that cannot be understood."""


@dataclass(frozen=True)
class ContainerScript:
    """Behaviour of one container once the kubelet starts it."""

    run_ticks: int | None = 2  # None: runs until the pod is deleted or evicted
    exit_code: int = 0
    oom_killed: bool = False
    pull_fails: bool = False
    log_lines: int = 0  # numbered lines printed first
    says: tuple[bytes, ...] = ()  # then these lines

    def output(self, container: str) -> bytes:
        """Everything the container prints, each line ending in a newline."""
        total = self.log_lines
        numbered = (f"{container} line {i} of {total}".encode() for i in range(1, total + 1))
        return b"".join(line + b"\n" for line in (*numbered, *self.says))


@dataclass(frozen=True)
class ImageRule:
    """`pattern` is an fnmatch glob on the image reference, e.g. `"*does-not-exist*"`."""

    pattern: str
    script: ContainerScript


@dataclass(frozen=True)
class PodScript:
    """Scripts per container name, plus pod-level events."""

    containers: Mapping[str, ContainerScript] = field(default_factory=dict)
    evict_after_ticks: int | None = None


DEFAULT_SCRIPT = ContainerScript()
INIT_DEFAULT_SCRIPT = ContainerScript(run_ticks=1)
DEFAULT_RULES: tuple[ImageRule, ...] = (ImageRule("*does-not-exist*", ContainerScript(pull_fails=True)),)


def _int(token: str, value: str, *, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ScriptError(f"{token!r}: {value!r} is not an integer") from None
    if number < minimum or number > 10**6:
        raise ScriptError(f"{token!r}: must be between {minimum} and 1000000")
    return number


def parse_container_annotation(text: str, base: ContainerScript) -> ContainerScript:
    """Apply the tokens of one annotation value on top of `base`."""
    script = base
    for token in text.replace(",", " ").split():
        key, _, value = token.partition("=")
        if key == "ticks" and value:
            script = replace(script, run_ticks=_int(token, value, minimum=1))
        elif key == "exit" and value:
            script = replace(script, exit_code=_int(token, value, minimum=0))
        elif token == "forever":
            script = replace(script, run_ticks=None)
        elif token == "oom":
            script = replace(script, oom_killed=True, exit_code=137)
        elif token == "pull-fail":
            script = replace(script, pull_fails=True)
        elif key == "log" and value:
            script = replace(script, log_lines=_int(token, value, minimum=0))
        elif key == "say":
            script = replace(script, says=(*script.says, unquote_to_bytes(value)))
        else:
            raise ScriptError(f"unknown simulation token {token[:40]!r}")
    return script


def _base_script(image: str, rules: Sequence[ImageRule], default: ContainerScript) -> ContainerScript:
    return next((r.script for r in rules if fnmatch.fnmatchcase(image, r.pattern)), default)


def script_for(
    pod: Mapping[str, Any],
    *,
    rules: Sequence[ImageRule] = DEFAULT_RULES,
    default: ContainerScript = DEFAULT_SCRIPT,
    init_default: ContainerScript = INIT_DEFAULT_SCRIPT,
) -> PodScript:
    """The script of every container of `pod`; raises ScriptError on a malformed annotation.

    Init containers default to one tick so pods start promptly; regular containers to two.
    """
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    spec = pod.get("spec") or {}
    scripts: dict[str, ContainerScript] = {}
    groups = ((spec.get("initContainers") or [], init_default), (spec.get("containers") or [], default))
    for containers, fallback in groups:
        for container in containers:
            base = _base_script(str(container.get("image", "")), rules, fallback)
            annotation = annotations.get(CONTAINER_KEY + container["name"])
            scripts[container["name"]] = parse_container_annotation(annotation, base) if annotation else base
    evict = annotations.get(EVICT_KEY)
    return PodScript(scripts, _int(EVICT_KEY, evict, minimum=0) if evict is not None else None)
