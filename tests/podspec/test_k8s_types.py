"""The shipped field table (podspec/k8s_types.json) agrees with kubernetes-validate's schemas, and the
Go-style decoder built on it behaves like encoding/json."""

from __future__ import annotations

import os

import pytest

from podspec.errors import BuildError
from podspec.gojson import Decoder, clone, is_quantity, load_table
from tests.podspec.schema import TYPE_TABLE_FILE, derive_type_table, render_type_table


def test_shipped_type_table_matches_the_kubernetes_schemas() -> None:
    rendered = render_type_table(derive_type_table())
    if os.environ.get("UPDATE_GOLDEN") == "1":
        TYPE_TABLE_FILE.write_text(rendered)
    assert TYPE_TABLE_FILE.read_text() == rendered, "regenerate with UPDATE_GOLDEN=1 pytest tests/podspec"


def test_table_covers_the_types_the_builder_touches() -> None:
    table = load_table()
    assert table["PodSpec"]["containers"] == ["list", ["ref", "Container"]]
    assert table["Container"]["resources"] == ["ref", "ResourceRequirements"]
    assert table["ResourceRequirements"]["limits"] == ["map", "quantity"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("500m", True), ("2Gi", True), ("1e3", True), (".5", True), (2, True), (0.5, True),
     ("2 Gi", False), ("lots", False), ("", False), (True, False), (None, False)],
)  # fmt: skip
def test_quantities_follow_the_kubernetes_grammar(value: object, expected: bool) -> None:
    assert is_quantity(value) is expected


def test_decoding_returns_canonical_spelling_without_touching_the_input() -> None:
    raw = {"CONTAINERS": [{"Name": "a", "Image": "b", "Env": [{"NAME": "X", "value": "1"}]}]}
    before = clone(raw)
    out = Decoder(load_table()).decode(raw, ["ref", "PodSpec"], "spec")
    assert out == {"containers": [{"name": "a", "image": "b", "env": [{"name": "X", "value": "1"}]}]}
    assert raw == before


def test_int_or_string_fields_take_both() -> None:
    decoder = Decoder(load_table())
    probe = {"httpGet": {"port": "http"}, "tcpSocket": {"port": 80}}
    assert decoder.decode(probe, ["ref", "Probe"], "p") == probe
    with pytest.raises(BuildError, match="an integer or a string"):
        decoder.decode({"httpGet": {"port": True}}, ["ref", "Probe"], "p")


def test_free_form_fields_pass_through() -> None:
    value = {"name": "v", "csi": {"driver": "d", "volumeAttributes": {"k": "v"}}}
    assert Decoder(load_table()).decode(value, ["ref", "Volume"], "v") == value


def test_clone_shares_nothing() -> None:
    value = {"a": [{"b": 1}]}
    copied = clone(value)
    copied["a"][0]["b"] = 2
    assert value == {"a": [{"b": 1}]}
