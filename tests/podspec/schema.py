"""Strict Kubernetes JSON schemas for tests, loaded once per process.

The schemas come from the `kubernetes-validate` package (dev dependency only; the pod builder never
imports it). ``validate_pod`` checks a manifest against the strict Pod schema; ``derive_type_table``
rebuilds the compact field table that ships as ``podspec/k8s_types.json`` so a test can prove the
shipped table still agrees with the schemas.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import referencing

from app.simulate.kube_validation import validate_pod


def _newest_strict_dir() -> Path:
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    dirs = [p for p in base.iterdir() if re.fullmatch(r"v\d+\.\d+\.\d+-local-strict", p.name)]
    return max(dirs, key=lambda p: tuple(int(n) for n in p.name[1:].split("-")[0].split(".")))


_SCHEMA_DIR = _newest_strict_dir()
TYPE_TABLE_FILE = Path(__file__).parents[2] / "podspec" / "k8s_types.json"
_DEFS_ID = "https://kubernetes.io/api/_definitions.json"
_CORE = "io.k8s.api.core.v1."
# The builder reads and writes PodSpec; its config also takes these core types on their own.
ROOT_TYPES = ("PodSpec",)


@functools.cache
def _definitions() -> dict[str, Any]:
    return json.loads((_SCHEMA_DIR / "_definitions.json").read_text())


@functools.cache
def pod_validator() -> jsonschema.protocols.Validator:
    """One validator for ``v1/Pod``, built on first use (about a second) and reused."""
    pod_schema = json.loads((_SCHEMA_DIR / "pod-v1.json").read_text())
    registry = referencing.Registry().with_resource(
        _DEFS_ID, referencing.Resource.from_contents(_definitions())
    )
    cls = jsonschema.validators.validator_for(pod_schema)
    return cls(pod_schema, registry=registry)


def pod_schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Every schema violation in ``manifest`` as ``path: message`` (empty when valid)."""
    return [
        f"{'.'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in pod_validator().iter_errors(manifest)
    ]


def assert_valid_pod(manifest: dict[str, Any]) -> None:
    """The strict schema, then the apiserver's own rules that no schema expresses (names, references…)."""
    errors = pod_schema_errors(manifest)
    assert not errors, "pod fails the strict Kubernetes schema:\n" + "\n".join(errors)
    causes = validate_pod(manifest)
    assert not causes, "pod fails the apiserver's checks:\n" + "\n".join(map(str, causes))


# ---- the compact type table shipped in podspec/k8s_types.json -------------------------------------


def _short(ref: str) -> str:
    return ref.rsplit("/", 1)[-1].rsplit(".", 1)[-1]


def _types(prop: dict[str, Any]) -> set[str]:
    kind = prop.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def _field_spec(prop: dict[str, Any], pending: list[str]) -> Any:
    if "$ref" in prop:
        name = _short(prop["$ref"])
        if name in ("Quantity", "IntOrString"):
            return "quantity" if name == "Quantity" else "int-or-string"
        target = _definitions()["$defs"][prop["$ref"].rsplit("/", 1)[-1]]
        if "properties" not in target:  # a named primitive such as meta/v1 Time
            return _field_spec(target, pending)
        pending.append(name)
        return ["ref", name]
    if "oneOf" in prop:
        return "any"
    kinds = _types(prop) - {"null"}
    if "array" in kinds:
        return ["list", _field_spec(prop["items"], pending)]
    if "object" in kinds:
        extra = prop.get("additionalProperties")
        return ["map", _field_spec(extra, pending)] if isinstance(extra, dict) else "any"
    if "enum" in prop:
        return ["enum", sorted(v for v in prop["enum"] if v is not None)]
    (kind,) = kinds
    return {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}[kind]


def _unique(defs: dict[str, Any], name: str) -> dict[str, Any]:
    (schema,) = [v for k, v in defs.items() if _short(k) == name and "properties" in v]
    return schema


def derive_type_table() -> dict[str, dict[str, Any]]:
    """Field name → type spec for every object type reachable from PodSpec."""
    defs = _definitions()["$defs"]
    table: dict[str, dict[str, Any]] = {}
    pending = list(ROOT_TYPES)
    while pending:
        name = pending.pop()
        if name in table:
            continue
        schema = defs.get(_CORE + name) or _unique(defs, name)
        table[name] = {}
        for field, prop in sorted(schema.get("properties", {}).items()):
            table[name][field] = _field_spec(prop, pending)
        if schema.get("required"):
            table[name]["$required"] = sorted(schema["required"])
    return dict(sorted(table.items()))


def render_type_table(table: dict[str, dict[str, Any]]) -> str:
    """The file format of ``podspec/k8s_types.json``: one type per line, so diffs stay readable."""
    lines = [
        f"{json.dumps(name)}:{json.dumps(fields, separators=(',', ':'))}" for name, fields in table.items()
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"
