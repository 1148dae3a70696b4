"""Decode untrusted JSON into typed Kubernetes / plugin shapes the way Go's ``encoding/json`` does.

agent-stack-k8s unmarshals the plugin config into Go structs, so pipelines in the wild rely on Go's
rules: object keys match field names case-insensitively (an exact match wins), unknown keys are
silently dropped, ``null`` leaves a field unset, and a value of the wrong type fails the whole job.
``decode`` reproduces that against a field table (``k8s_types.json``, derived from the Kubernetes
OpenAPI schemas, plus the plugin's own types) and returns a canonical dict: canonical key spelling,
no nulls, no unknown keys. Unknown keys become warnings — or errors in strict (lint) mode. Keys that
start with ``$`` are strategic-merge directives and pass through when ``allow_directives`` is set.

A type spec is ``"string" | "integer" | "number" | "boolean" | "quantity" | "int-or-string" | "any"``
or ``["ref", TypeName]``, ``["list", spec]``, ``["map", spec]``, ``["enum", [values]]``. A type's
``"$required"`` entry lists the fields Kubernetes requires; outside patches a missing one is an error,
except the few the pod builder fills in itself (``BUILDER_FILLS``).
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

from podspec.errors import BuildError

Spec = str | list[Any]
_INT64 = 2**63
REQUIRED = "$required"
# A podSpec may omit containers (the step runs in container-0) and container names (container-N).
BUILDER_FILLS = frozenset({("PodSpec", "containers"), ("Container", "name")})
MAX_FREE_FORM_DEPTH = 32
# Kubernetes resource.Quantity grammar: a signed decimal number, then a binary/decimal SI suffix or
# a decimal exponent.
_QUANTITY = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")
_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


class TypeTable(dict[str, dict[str, Spec]]):
    """Type name → field name → spec, plus the lower-cased field index Go's matching needs.

    Build one per process (the index costs a fraction of a millisecond) and share it.
    """

    @functools.cached_property
    def folded(self) -> dict[str, dict[str, str]]:
        return {name: {f.lower(): f for f in fields if f != REQUIRED} for name, fields in self.items()}

    @functools.cached_property
    def required(self) -> dict[str, tuple[str, ...]]:
        return {
            name: tuple(f for f in fields.get(REQUIRED, ()) if (name, f) not in BUILDER_FILLS)
            for name, fields in self.items()
        }


def load_table() -> TypeTable:
    """The Kubernetes field table shipped beside this module (object types reachable from PodSpec)."""
    text = resources.files("podspec").joinpath("k8s_types.json").read_text()
    return TypeTable(json.loads(text))


def is_quantity(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and _QUANTITY.fullmatch(value) is not None


def clone(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars); several times faster than deepcopy."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def _shallow_enough(value: Any, path: str) -> Any:
    """Free-form values are not shaped by a type, so bound their nesting (later steps recurse)."""
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > MAX_FREE_FORM_DEPTH:
            raise BuildError(path, f"is nested more than {MAX_FREE_FORM_DEPTH} levels deep")
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return value


def describe(value: object, limit: int = 40) -> str:
    """A short rendering of a bad value for an error message (hostile input may be huge)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Decoder:
    """One decoding pass; collects warnings for keys it dropped."""

    def __init__(self, table: TypeTable, *, strict: bool = False, allow_directives: bool = False) -> None:
        self.table = table
        self.strict = strict
        self.allow_directives = allow_directives
        self.warnings: list[str] = []
        self._folded = table.folded

    def decode(self, value: Any, spec: Spec, path: str) -> Any:
        if isinstance(spec, str):
            return self._scalar(value, spec, path)
        kind, arg = spec
        if kind == "ref":
            return self._object(value, arg, path)
        if kind == "list":
            items = self._expect(value, list, path)
            return [self.decode(item, arg, join(path, i)) for i, item in enumerate(items)]
        if kind == "map":
            entries = self._expect(value, dict, path)
            return {k: self._item(v, arg, join(path, k)) for k, v in entries.items() if self._keeps(v)}
        if kind == "enum":
            if value not in arg:
                choices = ", ".join(json.dumps(choice) for choice in arg)
                raise BuildError(path, f"must be one of {choices} (got {describe(value)})")
            return value
        raise AssertionError(f"unknown type spec {spec!r}")

    def _object(self, value: Any, type_name: str, path: str) -> dict[str, Any]:
        entries = self._expect(value, dict, path)
        fields = self.table[type_name]
        folded = self._folded[type_name]
        out: dict[str, Any] = {}
        for key, item in entries.items():
            if self.allow_directives and key.startswith("$"):
                out[key] = _shallow_enough(item, join(path, key))
                continue
            name = key if key in fields and key != REQUIRED else folded.get(key.lower())
            if name is None:
                self._unknown(join(path, key))
            elif self._keeps(item):
                out[name] = self._item(item, fields[name], join(path, name))
        if not self.allow_directives:  # a patch names only what it changes
            for name in self.table.required[type_name]:
                if name not in out:
                    raise BuildError(join(path, name), "is required")
        return out

    def _keeps(self, item: Any) -> bool:
        # Go leaves a field unset for null; in a strategic-merge patch null means "delete this key".
        return item is not None or self.allow_directives

    def _item(self, item: Any, spec: Spec, path: str) -> Any:
        return None if item is None else self.decode(item, spec, path)

    def _unknown(self, path: str) -> None:
        if self.strict:
            raise BuildError(path, "unknown field")
        self.warnings.append(f"{path}: unknown field, ignored")

    def _scalar(self, value: Any, spec: str, path: str) -> Any:
        if spec == "any":
            return _shallow_enough(value, path)
        if spec == "string":
            return self._expect(value, str, path)
        if spec == "boolean":
            return self._expect(value, bool, path)
        if spec in ("integer", "int-or-string"):
            if isinstance(value, str) and spec == "int-or-string":
                return value
            if isinstance(value, bool) or not isinstance(value, int):
                what = "an integer or a string" if spec == "int-or-string" else "an integer"
                raise BuildError(path, f"must be {what} (got {describe(value)})")
            if not -_INT64 <= value < _INT64:
                raise BuildError(path, f"integer out of range (got {describe(value)})")
            return value
        if spec == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BuildError(path, f"must be a number (got {describe(value)})")
            return value
        if spec == "quantity":
            if not is_quantity(value):
                raise BuildError(path, f"must be a quantity such as 500m or 2Gi (got {describe(value)})")
            return value
        raise AssertionError(f"unknown type spec {spec!r}")

    @staticmethod
    def _expect(value: Any, kind: type, path: str) -> Any:
        if type(value) is not kind:
            raise BuildError(path, f"must be {_NAMES[kind]} (got {describe(value)})")
        return value
