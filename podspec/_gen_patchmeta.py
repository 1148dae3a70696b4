"""Generate ``podspec/patchmeta.py``, the strategic-merge table for PodSpec and every type it contains.

Input: the JSON schemas bundled with ``kubernetes-validate`` (newest ``vX.Y.Z-local`` directory,
``_definitions.json``). They keep the Kubernetes patch metadata (``x-kubernetes-patch-strategy``,
``x-kubernetes-patch-merge-key``) that ``podspec.merge`` needs. ``kubernetes-validate`` is 100+ MB,
so the pod builder must not import it at run time: this script derives a small table once, the
table is committed, and ``tests/podspec/test_patchmeta.py`` regenerates it in memory so the two can
never drift apart.

Run it after upgrading ``kubernetes-validate``::

    python -m podspec._gen_patchmeta          # rewrites podspec/patchmeta.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT_TYPES = (
    "io.k8s.api.core.v1.PodSpec",
    "io.k8s.api.core.v1.PodTemplateSpec",
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
)
OUTPUT = Path(__file__).with_name("patchmeta.py")

FieldMeta = tuple[str, str, str | None, str | None]
Table = dict[str, dict[str, FieldMeta]]


def schema_dir() -> Path:
    """The newest ``vX.Y.Z-local`` schema directory shipped with kubernetes-validate."""
    import kubernetes_validate  # imported here: only the generator and its test need it

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions = [p for p in base.iterdir() if re.fullmatch(r"v\d+\.\d+\.\d+-local", p.name)]
    return max(versions, key=lambda p: tuple(int(n) for n in p.name[1:-6].split(".")))


def load_definitions() -> tuple[str, dict[str, Any]]:
    """(version, definitions) from the newest bundled schema, e.g. ``("v1.37.0", {...})``."""
    directory = schema_dir()
    document = json.loads((directory / "_definitions.json").read_text())
    definitions = document.get("$defs") or document["definitions"]
    return directory.name.removesuffix("-local"), definitions


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    if ref is None and len(schema.get("allOf", ())) == 1:
        ref = schema["allOf"][0].get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def _types_of(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type", ())
    return {declared} if isinstance(declared, str) else set(declared)


def short_name(full_name: str) -> str:
    """``io.k8s.api.core.v1.PodSpec`` → ``PodSpec`` (uniqueness is checked by ``build_table``)."""
    return full_name.rsplit(".", 1)[-1]


class _Walker:
    """Collects the metadata of every struct type reachable from the root types."""

    def __init__(self, definitions: dict[str, Any]) -> None:
        self.definitions = definitions
        self.table: Table = {}
        self.full_names: dict[str, str] = {}

    def visit(self, full_name: str) -> None:
        name = short_name(full_name)
        if name in self.table:
            if self.full_names[name] != full_name:
                other = self.full_names[name]
                raise ValueError(f"two types share the short name {name}: {other}, {full_name}")
            return
        self.full_names[name] = full_name
        self.table[name] = fields = {}
        for field, schema in sorted(self.definitions[full_name].get("properties", {}).items()):
            meta = self.field_meta(schema)
            if meta is not None:
                fields[field] = meta

    def value_type(self, schema: dict[str, Any]) -> tuple[str, str | None]:
        """('object', Type) for a struct, ('map', None) for a free map, ('scalar', None) otherwise."""
        ref = _ref_name(schema)
        if ref is not None:
            target = self.definitions[ref]
            if "properties" in target:
                self.visit(ref)
                return "object", short_name(ref)
            schema = target
        if "object" in _types_of(schema):
            return "map", None
        return "scalar", None

    def field_meta(self, schema: dict[str, Any]) -> FieldMeta | None:
        strategy = schema.get("x-kubernetes-patch-strategy", "")
        merge_key = schema.get("x-kubernetes-patch-merge-key")
        if "array" in _types_of(schema):
            item_kind, item_type = self.value_type(schema.get("items", {}))
            return "list", strategy, merge_key, item_type if item_kind == "object" else None
        kind, type_name = self.value_type(schema)
        if kind == "map":
            value_kind, value_type = self.value_type(schema.get("additionalProperties", {}))
            return "map", strategy, None, value_type if value_kind == "object" else None
        if kind == "object":
            return "object", strategy, None, type_name
        return None  # scalars need no metadata: a patch value simply replaces them


def build_table(definitions: dict[str, Any]) -> Table:
    """type → field → (kind, strategy, merge_key, item_type) for every reachable struct type."""
    walker = _Walker(definitions)
    for root in ROOT_TYPES:
        walker.visit(root)
    return {name: walker.table[name] for name in sorted(walker.table)}


def _literal(meta: FieldMeta) -> str:
    """A tuple literal with double quotes, as ``ruff format`` writes it."""
    return "(" + ", ".join("None" if part is None else json.dumps(part) for part in meta) + ")"


def render(table: Table, version: str) -> str:
    """The source of ``podspec/patchmeta.py`` (already in ``ruff format`` style)."""
    lines = [
        f'"""Strategic-merge patch metadata for PodSpec and its nested types (Kubernetes {version}).',
        "",
        "GENERATED by ``python -m podspec._gen_patchmeta`` from kubernetes-validate's JSON schemas; do not",
        "edit. type → field → (kind, strategy, merge_key, item_type), where kind is ``object`` (a nested",
        "struct), ``map`` (free-form keys) or ``list``; strategy is the ``x-kubernetes-patch-strategy``",
        "(``merge``, ``retainKeys``, both, or empty); item_type names the struct inside a list or object.",
        "Scalar fields are left out: a patch value simply replaces them.",
        '"""',
        "",
        "from typing import Final",
        "",
        f'SOURCE_VERSION: Final = "{version}"',
        "",
        "PATCH_META: Final[dict[str, dict[str, tuple[str, str, str | None, str | None]]]] = {",
    ]
    for type_name, fields in table.items():
        if not fields:
            lines.append(f'    "{type_name}": {{}},')
            continue
        lines.append(f'    "{type_name}": {{')
        lines.extend(f'        "{field}": {_literal(meta)},' for field, meta in fields.items())
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    version, definitions = load_definitions()
    OUTPUT.write_text(render(build_table(definitions), version))
    print(f"wrote {OUTPUT} from Kubernetes {version} schemas")


if __name__ == "__main__":
    main()
