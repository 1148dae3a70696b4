"""The Kubernetes OpenAPI-derived JSON schemas bundled with `kubernetes-validate`, loaded once.

Two uses: structural validation of pods (the strict schemas reject unknown fields and wrong types), and
strategic-merge metadata — the schemas keep the `x-kubernetes-patch-strategy` / `-patch-merge-key`
extensions, which say which lists merge and by which key. Loading `_definitions.json` costs ~0.3 s and
the package is 100+ MB, so everything here is cached per process; building a validator per request
would make every pod create ~100x slower.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

_DEFS_PREFIX = "#/$defs/"
_POD = "io.k8s.api.core.v1.Pod"


@cache
def schema_dir() -> Path:
    """The newest `vX.Y.Z-local-strict` schema directory shipped by kubernetes-validate."""
    root = Path(str(resources.files("kubernetes_validate") / "kubernetes-json-schema"))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.name.split("-")[0]))

    return max(root.glob("v*-local-strict"), key=version)


@cache
def definitions() -> dict[str, Any]:
    """All `$defs` of the bundled OpenAPI schema, keyed by Go type name."""
    with open(schema_dir() / "_definitions.json", encoding="utf-8") as handle:
        defs: dict[str, Any] = json.load(handle)
    return defs


@cache
def validator(kind_file: str = "pod-v1.json") -> jsonschema.protocols.Validator:
    """One Draft 2020-12 validator per kind, reused for every request."""
    with open(schema_dir() / kind_file, encoding="utf-8") as handle:
        schema = json.load(handle)
    registry: Registry = Resource.from_contents(definitions()) @ Registry()
    registry = Resource.from_contents(schema) @ registry
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry)


@dataclass(frozen=True)
class FieldPatchMeta:
    """How strategic merge treats one field: the child type and, for lists, the merge strategy."""

    definition: str | None  # $defs name of the value (or list item) type, if it is an object
    is_list: bool = False
    strategy: str = ""  # "merge", "retainKeys", "merge,retainKeys" or "" (replace)
    merge_key: str = ""


def _ref_name(prop: dict[str, Any]) -> str | None:
    ref = prop.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else None


@cache
def field_patch_meta(definition: str, field: str) -> FieldPatchMeta:
    """Strategic-merge metadata for `field` of the object type `definition` (e.g. PodSpec.containers)."""
    prop = definitions()["$defs"].get(definition, {}).get("properties", {}).get(field)
    if prop is None:
        return FieldPatchMeta(definition=None)
    items = prop.get("items")
    if isinstance(items, dict):
        return FieldPatchMeta(
            definition=_ref_name(items),
            is_list=True,
            strategy=prop.get("x-kubernetes-patch-strategy", ""),
            merge_key=prop.get("x-kubernetes-patch-merge-key", ""),
        )
    value_schema = prop.get("additionalProperties")
    if isinstance(value_schema, dict) and "$ref" in value_schema:
        return FieldPatchMeta(definition=None)  # map of objects: merged as a plain map
    return FieldPatchMeta(definition=_ref_name(prop), strategy=prop.get("x-kubernetes-patch-strategy", ""))


def definition_for_kind(kind: str) -> str | None:
    """The `$defs` name of a core/v1 or coordination/v1 top-level kind."""
    for group in ("io.k8s.api.core.v1.", "io.k8s.api.coordination.v1."):
        if group + kind in definitions()["$defs"]:
            return group + kind
    return None


POD_DEFINITION = _POD
