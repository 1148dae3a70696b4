"""Reading the kubernetes plugin out of BUILDKITE_PLUGINS: Go-compatible decoding and hostile input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from podspec.errors import BuildError
from podspec.job import KUBERNETES_PLUGIN_KEY
from podspec.plugin import MAX_PLUGINS_BYTES, KubernetesPlugin, decode_plugin, parse_plugins


def plugins_env(config: Any, *others: dict[str, Any]) -> str:
    return json.dumps([*others, {KUBERNETES_PLUGIN_KEY: config}])


def test_missing_or_empty_plugins_mean_no_kubernetes_plugin() -> None:
    assert parse_plugins(None).plugin is None
    assert parse_plugins("").plugin is None
    assert parse_plugins("[]").plugin is None


def test_other_plugins_are_left_to_the_agent() -> None:
    raw = json.dumps([{"github.com/buildkite-plugins/docker-buildkite-plugin#v5": {"image": "x"}}])
    assert parse_plugins(raw).plugin is None


def test_kubernetes_entry_is_found_among_other_plugins() -> None:
    raw = plugins_env({"podTemplate": "big"}, {"docker#v5": {"image": "x"}})
    parsed = parse_plugins(raw)
    assert parsed.plugin is not None and parsed.plugin.pod_template == "big"
    assert parsed.warnings == ()


def test_null_plugin_config_is_the_plugin_with_defaults() -> None:
    assert parse_plugins(plugins_env(None)).plugin == KubernetesPlugin()


def test_keys_match_case_insensitively_like_go_encoding_json() -> None:
    plugin = decode_plugin(
        {
            "PODSPEC": {"Containers": [{"IMAGE": "alpine", "command": ["true"]}]},
            "CommandParams": {"INTERPOSER": "vector"},
        }
    ).plugin
    assert plugin is not None
    assert plugin.pod_spec == {"containers": [{"image": "alpine", "command": ["true"]}]}
    assert plugin.command_params.interposer == "vector"


def test_two_spellings_of_one_key_resolve_to_the_later_one_like_go() -> None:
    plugin = decode_plugin({"podSpec": {"containers": [{"image": "a", "Image": "b"}]}}).plugin
    assert plugin is not None and plugin.pod_spec == {"containers": [{"image": "b"}]}


def test_unknown_keys_are_dropped_with_a_warning_naming_the_path() -> None:
    parsed = decode_plugin({"podSpec": {"containers": [{"image": "a", "colour": "red"}]}, "bogus": 1})
    assert parsed.plugin is not None and parsed.plugin.pod_spec == {"containers": [{"image": "a"}]}
    assert parsed.warnings == (
        "kubernetes.podSpec.containers[0].colour: unknown field, ignored",
        "kubernetes.bogus: unknown field, ignored",
    )


def test_unknown_keys_are_errors_in_strict_mode() -> None:
    with pytest.raises(BuildError) as caught:
        decode_plugin({"checkout": {"skipp": True}}, strict=True)
    assert caught.value.field == "kubernetes.checkout.skipp"


def test_fields_the_builder_fills_in_are_not_required() -> None:
    parsed = decode_plugin({"podSpec": {"volumes": []}, "sidecars": [{"image": "redis:7"}]})
    assert parsed.plugin is not None and parsed.plugin.pod_spec == {"volumes": []}


def test_patches_need_no_required_fields() -> None:
    patch = {"containers": [{"name": "agent", "env": [{"name": "X", "$patch": "delete"}]}], "volumes": [{}]}
    assert decode_plugin({"podSpecPatch": patch}).plugin is not None


def test_null_values_leave_fields_unset() -> None:
    plugin = decode_plugin(
        {"podSpec": {"containers": [{"image": "a", "args": None}], "nodeSelector": None}}
    ).plugin
    assert plugin is not None and plugin.pod_spec == {"containers": [{"image": "a"}]}


def test_pod_spec_patch_keeps_strategic_merge_directives_and_nulls() -> None:
    patch = {
        "containers": [{"name": "agent", "$patch": "delete"}],
        "nodeSelector": None,
        "$retainKeys": ["x"],
    }
    plugin = decode_plugin({"podSpecPatch": patch}).plugin
    assert plugin is not None and plugin.pod_spec_patch == patch


def test_directives_are_unknown_keys_outside_a_patch() -> None:
    parsed = decode_plugin({"podSpec": {"$patch": "replace"}})
    assert parsed.warnings == ("kubernetes.podSpec.$patch: unknown field, ignored",)


def test_every_plugin_field_is_decoded() -> None:
    config = {
        "podSpec": {"containers": [{"image": "a"}]},
        "podSpecPatch": {"serviceAccountName": "ci"},
        "podTemplate": "t",
        "gitEnvFrom": [{"secretRef": {"name": "git"}}],
        "sidecars": [{"image": "redis:7"}],
        "metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}},
        "extraVolumeMounts": [{"name": "v", "mountPath": "/v"}],
        "checkout": {"skip": False, "cloneFlags": "--depth=1", "gitMirrors": {"lockTimeout": 30}},
        "commandParams": {"interposer": "legacy", "envFrom": [{"configMapRef": {"name": "cm"}}]},
        "sidecarParams": {"extraVolumeMounts": [{"name": "s", "mountPath": "/s"}]},
        "jobActiveDeadlineSeconds": 60,
    }
    parsed = decode_plugin(config)
    assert parsed.warnings == ()
    assert parsed.plugin is not None
    assert parsed.plugin.model_dump(by_alias=True, exclude_defaults=True)["checkout"] == {
        "skip": False,
        "cloneFlags": "--depth=1",
        "gitMirrors": {"lockTimeout": 30},
    }
    assert parsed.plugin.job_active_deadline_seconds == 60


BAD_PLUGINS = [
    pytest.param("not json", "BUILDKITE_PLUGINS", "is not valid JSON", id="not-json"),
    pytest.param('{"a": 1}', "BUILDKITE_PLUGINS", "must be a JSON list", id="object-not-list"),
    pytest.param('"text"', "BUILDKITE_PLUGINS", "must be a JSON list", id="string-not-list"),
    pytest.param('[{"a": 1, "b": 2}]', "BUILDKITE_PLUGINS[0]", "exactly one key", id="entry-with-two-keys"),
    pytest.param("[{}]", "BUILDKITE_PLUGINS[0]", "exactly one key", id="entry-with-no-key"),
    pytest.param("[3]", "BUILDKITE_PLUGINS[0]", "exactly one key", id="entry-not-object"),
    pytest.param("[" * 100_000 + "]" * 100_000, "BUILDKITE_PLUGINS", "nested too deeply", id="deep-nesting"),
    pytest.param(plugins_env([1]), "kubernetes", "must be an object (got [1])", id="config-not-object"),
    pytest.param(
        plugins_env({"podSpec": {"containers": [{"image": "a"}, {"image": 3}]}}),
        "kubernetes.podSpec.containers[1].image",
        "must be a string (got 3)",
        id="image-not-string",
    ),
    pytest.param(
        plugins_env({"podSpec": {"containers": {"image": "a"}}}),
        "kubernetes.podSpec.containers",
        "must be a list",
        id="containers-not-list",
    ),
    pytest.param(
        plugins_env({"podSpec": {"terminationGracePeriodSeconds": "60"}}),
        "kubernetes.podSpec.terminationGracePeriodSeconds",
        "must be an integer",
        id="integer-as-string",
    ),
    pytest.param(
        plugins_env({"podSpec": {"terminationGracePeriodSeconds": 1.5}}),
        "kubernetes.podSpec.terminationGracePeriodSeconds",
        "must be an integer",
        id="integer-as-float",
    ),
    pytest.param(
        plugins_env({"podSpec": {"terminationGracePeriodSeconds": 10**30}}),
        "kubernetes.podSpec.terminationGracePeriodSeconds",
        "out of range",
        id="integer-too-large",
    ),
    pytest.param(
        plugins_env({"podSpec": {"hostNetwork": "yes"}}),
        "kubernetes.podSpec.hostNetwork",
        "must be a boolean",
        id="bool-as-string",
    ),
    pytest.param(
        plugins_env({"podSpec": {"containers": [{"image": "a", "resources": {"limits": {"cpu": "lots"}}}]}}),
        "kubernetes.podSpec.containers[0].resources.limits.cpu",
        "must be a quantity",
        id="bad-quantity",
    ),
    pytest.param(
        plugins_env({"checkout": {"skip": "true"}}),
        "kubernetes.checkout.skip",
        "must be a boolean",
        id="skip-string",
    ),
    pytest.param(
        plugins_env({"commandParams": {"interposer": "bash"}}),
        "kubernetes.commandParams.interposer",
        "must be one of",
        id="unknown-interposer",
    ),
    pytest.param(
        plugins_env({"jobActiveDeadlineSeconds": -5}),
        "kubernetes.jobActiveDeadlineSeconds",
        "greater than or equal to 0",
        id="negative-deadline",
    ),
    pytest.param(
        plugins_env({"metadata": {"labels": {"a": 1}}}),
        "kubernetes.metadata.labels.a",
        "must be a string",
        id="label-int",
    ),
    pytest.param(
        plugins_env({"sidecars": [{"image": ["x"]}]}),
        "kubernetes.sidecars[0].image",
        "must be a string",
        id="sidecar",
    ),
    pytest.param(
        plugins_env({"podSpec": {"containers": [{"image": "a", "env": [{"value": "1"}]}]}}),
        "kubernetes.podSpec.containers[0].env[0].name",
        "is required",
        id="env-without-name",
    ),
    pytest.param(
        plugins_env({"gitEnvFrom": [{"secretRef": {}}], "extraVolumeMounts": [{"name": "v"}]}),
        "kubernetes.extraVolumeMounts[0].mountPath",
        "is required",
        id="mount-without-path",
    ),
    pytest.param(
        plugins_env({"podSpec": {"containers": [{"image": "x" * 10_000, "name": 7}]}}),
        "kubernetes.podSpec.containers[0].name",
        "must be a string (got 7)",
        id="huge-string-beside-error",
    ),
]


@pytest.mark.parametrize(("raw", "field", "message"), BAD_PLUGINS)
def test_malformed_plugins_are_build_errors_naming_the_field(raw: str, field: str, message: str) -> None:
    with pytest.raises(BuildError) as caught:
        parse_plugins(raw)
    assert caught.value.field == field
    assert message in caught.value.message


def deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("config", "field"),
    [
        pytest.param(
            {"podSpec": {"volumes": [{"name": "v", "ephemeral": {"volumeClaimTemplate": {"metadata": {
                "managedFields": [{"fieldsV1": deep(500)}]}, "spec": {}}}}]}},
            "kubernetes.podSpec.volumes[0].ephemeral.volumeClaimTemplate.metadata.managedFields[0].fieldsV1",
            id="free-form-field",
        ),
        pytest.param(
            {"podSpecPatch": {"$setElementOrder/containers": [deep(500)]}},
            "kubernetes.podSpecPatch.$setElementOrder/containers",
            id="patch-directive",
        ),
    ],
)  # fmt: skip
def test_deeply_nested_free_form_values_are_refused(config: dict[str, Any], field: str) -> None:
    with pytest.raises(BuildError) as caught:
        decode_plugin(config)
    assert caught.value.field == field
    assert "nested more than" in caught.value.message


def test_an_oversized_plugins_value_is_refused_before_parsing() -> None:
    raw = plugins_env({"podSpec": {"containers": [{"image": "a", "args": ["x" * MAX_PLUGINS_BYTES]}]}})
    with pytest.raises(BuildError, match="limit"):
        parse_plugins(raw)


def test_error_messages_cut_long_values_short() -> None:
    with pytest.raises(BuildError) as caught:
        parse_plugins(plugins_env({"podTemplate": ["y" * 5000]}))
    assert len(str(caught.value)) < 200
