"""Readers for the attributes of a pipeline and its command steps (pure; used by ``app.cli.pipeline``).

Each reader takes the raw YAML value (already made JSON-ready by ``app.cli.pipeline``) and returns the
value as Buildkite would hand it to an agent, or raises ``FieldError`` naming the attribute, so the
caller can say which step it was and carry on with the next attribute.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from podspec.job import KUBERNETES_PLUGIN_KEY

# Our bound, not Buildkite's: past this a rendering is unreadable anyway.
MAX_PARALLELISM = 1000


class FieldError(Exception):
    """One attribute is wrong; ``field`` is its path within the step, e.g. ``plugins[1]``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def plugin_source(name: str) -> str:
    """The source Buildkite puts in ``BUILDKITE_PLUGINS`` for a plugin name written in a step.

    ``kubernetes`` → ``KUBERNETES_PLUGIN_KEY``; ``docker#v5`` →
    ``github.com/buildkite-plugins/docker-buildkite-plugin#v5``; ``org/x#v1`` →
    ``github.com/org/x-buildkite-plugin#v1``; URLs, host paths and local paths are kept.
    """
    if name == "kubernetes":
        return KUBERNETES_PLUGIN_KEY
    base, hash_, version = name.partition("#")
    if "://" in base or base.startswith(("git@", ".", "/", "~")) or "." in base.split("/", 1)[0]:
        return name
    owner, _, repo = base.rpartition("/")
    if not repo.endswith("-buildkite-plugin"):
        repo += "-buildkite-plugin"
    return f"github.com/{owner or 'buildkite-plugins'}/{repo}{hash_}{version}"


def string(raw: dict[str, Any], attr: str) -> str:
    value = raw.get(attr)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldError(attr, f"must be a string (got {describe(value)})")
    return value


def label(raw: dict[str, Any]) -> str:
    if raw.get("label") is not None:
        return string(raw, "label")
    return string(raw, "name")


def command(raw: dict[str, Any]) -> str:
    present = [attr for attr in ("command", "commands") if raw.get(attr) is not None]
    if len(present) > 1:
        raise FieldError("commands", "give command or commands, not both")
    if not present:
        return ""
    value = raw[present[0]]
    lines = value if isinstance(value, list) else [value]
    for index, line in enumerate(lines):
        if not isinstance(line, str):
            where = f"{present[0]}[{index}]" if isinstance(value, list) else present[0]
            raise FieldError(where, f"must be a string or a list of strings (got {describe(line)})")
    return "\n".join(lines)


def env(value: Any, attr: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError(attr, f"must be a mapping of NAME: value (got {describe(value)})")
    return {name: scalar_text(item, f"{attr}.{name}") for name, item in value.items()}


def agents(value: Any, attr: str) -> dict[str, str]:
    """``{queue: x}`` or ``["queue=x"]`` → tags; Buildkite turns scalar values into strings."""
    if value is None:
        return {}
    if isinstance(value, list):
        tags = {}
        for index, rule in enumerate(value):
            if not isinstance(rule, str):
                raise FieldError(f"{attr}[{index}]", f"must be a key=value string (got {describe(rule)})")
            name, _, tag = rule.partition("=")
            tags[name.strip()] = tag.strip()
        return tags
    if not isinstance(value, dict):
        raise FieldError(attr, f"must be a mapping or a list of key=value (got {describe(value)})")
    return {name: scalar_text(item, f"{attr}.{name}") for name, item in value.items()}


def image(value: Any, attr: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise FieldError(attr, f"must be an image reference string (got {describe(value)})")
    return value


def plugins(raw: dict[str, Any]) -> str | None:
    """``BUILDKITE_PLUGINS``: a JSON list of single-key objects keyed by the expanded source."""
    value = raw.get("plugins")
    if value is None:
        return None
    if isinstance(value, dict):  # the map form, `plugins: {docker#v5: {...}}`
        value = [{name: config} for name, config in value.items()]
    if not isinstance(value, list):
        raise FieldError("plugins", f"must be a list of plugins (got {describe(value)})")
    entries = []
    for index, entry in enumerate(value):
        if isinstance(entry, str):  # a plugin without configuration
            entry = {entry: None}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise FieldError(
                f"plugins[{index}]", f"must be a mapping with exactly one plugin (got {describe(entry)})"
            )
        ((name, config),) = entry.items()
        entries.append({plugin_source(name): config})
    return json.dumps(entries, separators=(",", ":"))


def plugin_notes(raw: dict[str, Any]) -> list[FieldError]:
    """Lint notes: a versioned ``kubernetes#vX`` may expand to a key the controller does not read."""
    value = raw.get("plugins")
    names = list(value) if isinstance(value, dict) else [_plugin_name(entry) for entry in value or []]
    return [
        FieldError(
            f"plugins[{index}]", f"{name!r}: write plain `kubernetes` (no version); it is not a real plugin"
        )
        for index, name in enumerate(names)
        if isinstance(name, str) and name.startswith("kubernetes#")
    ]


def _plugin_name(entry: Any) -> Any:
    if isinstance(entry, dict) and len(entry) == 1:
        return next(iter(entry))
    return entry


def parallelism(raw: dict[str, Any]) -> int:
    value = raw.get("parallelism")
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARALLELISM:
        raise FieldError(
            "parallelism", f"must be an integer from 1 to {MAX_PARALLELISM} (got {describe(value)})"
        )
    return value


def priority(raw: dict[str, Any]) -> int:
    value = raw.get("priority", 0)
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**31:
        raise FieldError("priority", f"must be a 32-bit integer (got {describe(value)})")
    return value


def matrix(raw: dict[str, Any]) -> None:
    if raw.get("matrix") is not None:
        raise FieldError("matrix", "matrix steps are not expanded here; write one step per combination")


def scalar_text(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    raise FieldError(where, f"must be a string, number or boolean (got {describe(value)})")


def describe(value: Any) -> str:
    """A short description of a bad value: hostile input may be huge."""
    if isinstance(value, dict | list):
        return (
            f"a mapping of {len(value)} keys" if isinstance(value, dict) else f"a list of {len(value)} items"
        )
    if value is None:
        return "nothing"
    text = json.dumps(value) if isinstance(value, str | int | float | bool) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


STEP_READERS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("key", lambda raw: string(raw, "key")),
    ("label", label),
    ("command", command),
    ("env", lambda raw: env(raw.get("env"), "env")),
    ("agents", lambda raw: agents(raw.get("agents"), "agents")),
    ("image", lambda raw: image(raw.get("image"), "image")),
    ("plugins", plugins),
    ("parallelism", parallelism),
    ("priority", priority),
    ("matrix", matrix),
)
