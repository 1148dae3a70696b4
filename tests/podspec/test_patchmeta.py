"""The committed strategic-merge table (podspec/patchmeta.py) must equal what the generator derives
from kubernetes-validate's bundled JSON schemas, so the two can never drift apart."""

from __future__ import annotations

import pytest

from podspec import _gen_patchmeta, patchmeta


@pytest.fixture(scope="module")
def schema() -> tuple[str, dict]:
    return _gen_patchmeta.load_definitions()


def test_committed_table_equals_the_table_regenerated_from_the_schemas(schema: tuple[str, dict]) -> None:
    version, definitions = schema
    assert _gen_patchmeta.build_table(definitions) == patchmeta.PATCH_META, (
        "podspec/patchmeta.py is stale: run `python -m podspec._gen_patchmeta`"
    )
    assert version == patchmeta.SOURCE_VERSION


def test_committed_file_is_byte_for_byte_what_the_generator_writes(schema: tuple[str, dict]) -> None:
    version, definitions = schema
    rendered = _gen_patchmeta.render(_gen_patchmeta.build_table(definitions), version)
    assert rendered == _gen_patchmeta.OUTPUT.read_text()


def _version(directory_name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in directory_name[1:].removesuffix("-local").split("."))


def test_generator_reads_the_newest_local_schema_version() -> None:
    newest = _gen_patchmeta.schema_dir()
    siblings = [p.name for p in newest.parent.iterdir() if p.name.endswith("-local")]
    assert _version(newest.name) == max(_version(n) for n in siblings)


@pytest.mark.parametrize(
    ("type_name", "field", "expected"),
    [
        pytest.param(
            "PodSpec", "containers", ("list", "merge", "name", "Container"), id="containers-by-name"
        ),
        pytest.param("PodSpec", "initContainers", ("list", "merge", "name", "Container"), id="init-by-name"),
        pytest.param("PodSpec", "volumes", ("list", "merge,retainKeys", "name", "Volume"), id="volumes"),
        pytest.param("PodSpec", "hostAliases", ("list", "merge", "ip", "HostAlias"), id="host-aliases-by-ip"),
        pytest.param(
            "PodSpec",
            "imagePullSecrets",
            ("list", "merge", "name", "LocalObjectReference"),
            id="pull-secrets",
        ),
        pytest.param("PodSpec", "tolerations", ("list", "", None, "Toleration"), id="tolerations-replaced"),
        pytest.param("PodSpec", "nodeSelector", ("map", "", None, None), id="node-selector-is-a-map"),
        pytest.param("Container", "env", ("list", "merge", "name", "EnvVar"), id="env-by-name"),
        pytest.param(
            "Container", "volumeMounts", ("list", "merge", "mountPath", "VolumeMount"), id="mounts-by-path"
        ),
        pytest.param(
            "Container", "ports", ("list", "merge", "containerPort", "ContainerPort"), id="ports-by-number"
        ),
        pytest.param("Container", "args", ("list", "", None, None), id="args-replaced"),
        pytest.param("Container", "envFrom", ("list", "", None, "EnvFromSource"), id="env-from-replaced"),
        pytest.param("ObjectMeta", "finalizers", ("list", "merge", None, None), id="finalizers-are-a-set"),
        pytest.param("PodTemplateSpec", "spec", ("object", "", None, "PodSpec"), id="template-spec"),
    ],
)
def test_table_holds_the_kubernetes_patch_rules(type_name: str, field: str, expected: tuple) -> None:
    assert patchmeta.PATCH_META[type_name][field] == expected


def test_every_referenced_item_type_is_itself_in_the_table() -> None:
    referenced = {meta[3] for fields in patchmeta.PATCH_META.values() for meta in fields.values()}
    assert referenced - {None} <= set(patchmeta.PATCH_META)


def test_scalar_fields_are_left_out_of_the_table() -> None:
    assert "image" not in patchmeta.PATCH_META["Container"]
    assert "restartPolicy" not in patchmeta.PATCH_META["PodSpec"]


def test_generator_rejects_two_types_with_the_same_short_name() -> None:
    definitions = {
        "a.v1.Root": {"properties": {"x": {"$ref": "#/$defs/a.v1.Leaf"}, "y": {"$ref": "#/$defs/b.v1.Leaf"}}},
        "a.v1.Leaf": {"properties": {"n": {"type": "string"}}},
        "b.v1.Leaf": {"properties": {"n": {"type": "string"}}},
    }
    walker = _gen_patchmeta._Walker(definitions)
    with pytest.raises(ValueError, match="short name Leaf"):
        walker.visit("a.v1.Root")
