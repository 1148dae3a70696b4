"""build(): precedence between plugin, PodTemplate, controller config and image: (reference §3.6),
command protection in patches (§4.8), resource classes (§3.4), metadata (§4.2) and build errors."""

from __future__ import annotations

from typing import Any

import pytest

from podspec import BuildError, BuiltPod, Job, build, pod_template_name
from tests.podspec.builders import (
    AGENT_IMAGE,
    JOB_UUID,
    container,
    env_of,
    make_config,
    make_job,
    names,
)
from tests.podspec.schema import assert_valid_pod

TEMPLATE = {"containers": [{"name": "tpl", "image": "template:1"}]}


def built(job: Job, template: dict[str, Any] | None = None, **config: Any) -> BuiltPod:
    result = build(job, config=make_config(**config), pod_template_spec=template)
    assert_valid_pod(result.manifest)
    return result


def first_command_image(result: BuiltPod) -> str:
    return result.manifest["spec"]["containers"][0]["image"]


# plugin, job env, config → the image of the first command container
IMAGE_PRECEDENCE = [
    pytest.param(None, {}, {}, AGENT_IMAGE, id="no-plugin-runs-the-controller-image"),
    pytest.param({"podSpec": {"containers": [{"image": "spec:1"}]}}, {}, {}, "spec:1", id="podSpec"),
    pytest.param({"podTemplate": "t"}, {}, {}, "template:1", id="podTemplate"),
    pytest.param(
        {"podTemplate": "t", "podSpec": {"containers": [{"image": "spec:1"}]}},
        {},
        {},
        "spec:1",
        id="podSpec>template",
    ),
    pytest.param(
        {"podSpec": {"containers": [{"image": "spec:1"}]}},
        {},
        {"pod_spec_patch": {"containers": [{"name": "container-0", "image": "ctl:1"}]}},
        "ctl:1",
        id="controller-patch>podSpec",
    ),
    pytest.param(
        None,
        {"BUILDKITE_IMAGE": "step:1"},
        {"pod_spec_patch": {"containers": [{"name": "container-0", "image": "ctl:1"}]}},
        "step:1",
        id="image-attribute>controller-patch",
    ),
    pytest.param(
        {"podSpecPatch": {"containers": [{"name": "container-0", "image": "patch:1"}]}},
        {"BUILDKITE_IMAGE": "step:1"},
        {},
        "patch:1",
        id="plugin-patch>image-attribute",
    ),
]


@pytest.mark.parametrize(("plugin", "env", "config", "expected"), IMAGE_PRECEDENCE)
def test_command_container_image_precedence(plugin: Any, env: dict, config: dict, expected: str) -> None:
    result = built(make_job(plugin=plugin, **env), template=TEMPLATE, **config)
    assert first_command_image(result) == expected


def test_image_attribute_replaces_every_command_container_but_not_stack_containers() -> None:
    job = make_job(
        plugin={"podSpec": {"containers": [{"image": "a:1"}, {"image": "b:1"}]}}, BUILDKITE_IMAGE="s:1"
    )
    manifest = built(job).manifest
    assert [c["image"] for c in manifest["spec"]["containers"]] == ["s:1", "s:1", AGENT_IMAGE, AGENT_IMAGE]


def test_the_pod_template_annotation_appears_only_when_the_template_is_used() -> None:
    used = built(make_job(plugin={"podTemplate": "t"}), template=TEMPLATE).manifest
    assert used["metadata"]["annotations"]["buildkite.com/pod-template-name"] == "t"
    ignored = built(make_job(plugin={"podTemplate": "t", "podSpec": {"containers": []}})).manifest
    assert "buildkite.com/pod-template-name" not in ignored["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        pytest.param(None, None, id="no-plugin"),
        pytest.param({"podTemplate": "big"}, "big", id="template"),
        pytest.param({"podTemplate": "big", "podSpec": {}}, None, id="podSpec-wins"),
        pytest.param({"checkout": {"skip": True}}, None, id="no-template"),
    ],
)
def test_pod_template_name_tells_the_caller_what_to_fetch(plugin: Any, expected: str | None) -> None:
    assert pod_template_name(make_job(plugin=plugin)) == expected


def test_pod_template_spec_is_decoded_like_plugin_input() -> None:
    template = {"Containers": [{"Image": "template:1", "colour": "red"}]}
    result = built(make_job(plugin={"podTemplate": "t"}), template=template)
    assert first_command_image(result) == "template:1"
    assert result.warnings == ("podTemplate[t].template.spec.containers[0].colour: unknown field, ignored",)


@pytest.mark.parametrize(
    ("default", "plugin", "has_checkout"),
    [
        pytest.param(None, None, True, id="default-runs-checkout"),
        pytest.param(True, None, False, id="controller-skips"),
        pytest.param(None, True, False, id="plugin-skips"),
        pytest.param(True, False, True, id="plugin-false-overrides-controller-true"),
    ],
)
def test_checkout_skip_precedence(default: bool | None, plugin: bool | None, has_checkout: bool) -> None:
    config = {} if default is None else {"default_checkout_params": {"skip": default}}
    job = make_job(plugin={} if plugin is None else {"checkout": {"skip": plugin}})
    manifest = built(job, **config).manifest
    assert ("checkout" in names(manifest)) is has_checkout
    assert env_of(container(manifest, "agent"))["BUILDKITE_CONTAINER_COUNT"] == ("2" if has_checkout else "1")


def test_skipped_checkout_also_drops_a_checkout_container_added_by_a_patch() -> None:
    patch = {"containers": [{"name": "checkout", "image": "alpine:3"}]}
    manifest = built(make_job(plugin={"checkout": {"skip": True}, "podSpecPatch": patch})).manifest
    assert "checkout" not in names(manifest)


@pytest.mark.parametrize(
    ("default", "plugin", "expected"),
    [
        pytest.param(None, None, "echo\nhi 'a b'", id="buildkite-by-default"),
        pytest.param("vector", None, "echo hi 'a b'", id="controller-default"),
        pytest.param("vector", "legacy", "echo hi a b", id="plugin-beats-controller"),
        pytest.param("vector", "", "echo hi 'a b'", id="empty-plugin-value-keeps-default"),
    ],
)
def test_interposer_precedence(default: str | None, plugin: str | None, expected: str) -> None:
    config = {} if default is None else {"default_command_params": {"interposer": default}}
    params = {} if plugin is None else {"commandParams": {"interposer": plugin}}
    job = make_job(
        plugin={
            **params,
            "podSpec": {"containers": [{"image": "a:1", "command": ["echo", "hi"], "args": ["a b"]}]},
        }
    )
    assert env_of(container(built(job, **config).manifest, "container-0"))["BUILDKITE_COMMAND"] == expected


@pytest.mark.parametrize(
    ("plugin", "config", "expected"),
    [
        pytest.param({}, {}, 21600, id="default-six-hours"),
        pytest.param({}, {"job_active_deadline_seconds": 100}, 100, id="controller"),
        pytest.param({"jobActiveDeadlineSeconds": 50}, {"job_active_deadline_seconds": 100}, 50, id="plugin"),
        pytest.param({"jobActiveDeadlineSeconds": 0}, {}, 21600, id="plugin-zero-is-unset"),
        pytest.param({"podSpec": {"activeDeadlineSeconds": 30}}, {}, 30, id="shorter-podSpec-deadline-kept"),
        pytest.param(
            {"podSpec": {"activeDeadlineSeconds": 10**6}}, {}, 21600, id="longer-podSpec-deadline-capped"
        ),
    ],
)
def test_active_deadline_precedence(plugin: dict, config: dict, expected: int) -> None:
    assert built(make_job(plugin=plugin), **config).manifest["spec"]["activeDeadlineSeconds"] == expected


def test_user_env_cannot_duplicate_the_command_container_contract() -> None:
    env = [{"name": "BUILDKITE_COMMAND", "value": "rm -rf /"}, {"name": "KEEP", "value": "1"}]
    manifest = built(make_job(plugin={"podSpec": {"containers": [{"image": "a:1", "env": env}]}})).manifest
    names_ = [e["name"] for e in container(manifest, "container-0")["env"]]
    assert names_.count("BUILDKITE_COMMAND") == 1 and "KEEP" in names_
    assert env_of(container(manifest, "container-0"))["BUILDKITE_COMMAND"] == "make test"


def test_pod_grace_period_feeds_the_agent_grace_periods() -> None:
    manifest = built(make_job(plugin={"podSpec": {"terminationGracePeriodSeconds": 300}})).manifest
    env = env_of(container(manifest, "agent"))
    assert (env["BUILDKITE_CANCEL_GRACE_PERIOD"], env["BUILDKITE_SIGNAL_GRACE_PERIOD_SECONDS"]) == (
        "300",
        "290",
    )
    manifest = built(make_job(plugin={"podSpec": {"terminationGracePeriodSeconds": 0}})).manifest
    env = env_of(container(manifest, "agent"))
    assert (env["BUILDKITE_CANCEL_GRACE_PERIOD"], env["BUILDKITE_SIGNAL_GRACE_PERIOD_SECONDS"]) == ("1", "0")


# ---- command protection in patches (§4.8) --------------------------------------------------------

PROTECTED = [
    pytest.param("containers", "agent", id="agent"),
    pytest.param("containers", "checkout", id="checkout"),
    pytest.param("initContainers", "copy-agent", id="copy-agent"),
    pytest.param("initContainers", "imagecheck-0", id="imagecheck"),
]


@pytest.mark.parametrize(("list_name", "name"), PROTECTED)
def test_patching_the_command_of_a_stack_container_is_refused(list_name: str, name: str) -> None:
    job = make_job(plugin={"podSpecPatch": {list_name: [{"name": name, "args": ["x"]}]}})
    with pytest.raises(BuildError) as caught:
        build(job, config=make_config())
    assert caught.value.field == f"kubernetes.podSpecPatch.{list_name}[0].command"
    assert "not supported" in caught.value.message


@pytest.mark.parametrize(("list_name", "name"), PROTECTED)
def test_the_unsafe_flag_allows_patching_stack_container_commands(list_name: str, name: str) -> None:
    patch = {"name": name, "command": ["/bin/custom"], "image": "alpine:3.20"}
    job = make_job(plugin={"podSpecPatch": {list_name: [patch]}})
    manifest = built(job, allow_pod_spec_patch_unsafe_command_modification=True).manifest
    if name == "imagecheck-0":
        assert "imagecheck-0" in names(manifest, "initContainers")  # a new init container of that name
    assert container(manifest, name)["command"] == ["/bin/custom"]


def test_a_patch_adding_a_container_without_an_image_is_refused() -> None:
    job = make_job(plugin={"podSpecPatch": {"initContainers": [{"name": "setup", "command": ["true"]}]}})
    with pytest.raises(BuildError) as caught:
        build(job, config=make_config())
    assert caught.value.field.endswith(".image")
    assert "'setup' has no image" in caught.value.message


def test_patching_a_command_container_reinterposes_its_command() -> None:
    patch = {"containers": [{"name": "container-0", "command": ["docker", "build"], "args": ["-t", "a b"]}]}
    job = make_job(plugin={"podSpecPatch": patch, "commandParams": {"interposer": "vector"}})
    manifest = built(job).manifest
    patched = container(manifest, "container-0")
    assert patched["command"] == ["/workspace/tini-static"]
    assert patched["args"] == ["--", "/workspace/buildkite-agent", "kubernetes-bootstrap"]
    assert env_of(patched)["BUILDKITE_COMMAND"] == "docker build -t 'a b'"
    assert [e["name"] for e in patched["env"]].count("BUILDKITE_COMMAND") == 1


def test_the_controller_patch_reinterposes_command_containers_when_allowed() -> None:
    patch = {"containers": [{"name": "container-0", "command": ["make lint"]}]}
    manifest = built(
        make_job(), pod_spec_patch=patch, allow_pod_spec_patch_unsafe_command_modification=True
    ).manifest
    assert env_of(container(manifest, "container-0"))["BUILDKITE_COMMAND"] == "make lint"


def test_new_containers_and_sidecars_may_set_commands() -> None:
    patch = {
        "containers": [{"name": "helper", "image": "busybox:1", "command": ["sleep", "60"]}],
        "initContainers": [{"name": "sidecar-0", "command": ["redis-server"]}],
    }
    job = make_job(plugin={"sidecars": [{"image": "redis:7"}], "podSpecPatch": patch})
    manifest = built(job).manifest
    assert container(manifest, "helper")["command"] == ["sleep", "60"]
    assert container(manifest, "sidecar-0")["command"] == ["redis-server"]
    assert names(manifest) == ["helper", "container-0", "agent", "checkout"]


def test_a_patch_without_containers_leaves_them_alone() -> None:
    base = built(make_job()).manifest
    patched = built(make_job(plugin={"podSpecPatch": {"nodeSelector": {"a": "b"}}})).manifest
    assert patched["spec"]["containers"] == base["spec"]["containers"]
    assert patched["spec"]["nodeSelector"] == {"a": "b"}


def test_strategic_merge_directives_work_in_plugin_patches() -> None:
    patch = {
        "containers": [{"name": "checkout", "$patch": "delete"}],
        "volumes": [{"name": "x", "emptyDir": {}}],
    }
    manifest = built(make_job(plugin={"podSpecPatch": patch})).manifest
    assert "checkout" not in names(manifest)
    assert [v["name"] for v in manifest["spec"]["volumes"]] == ["x", "workspace"]


def test_volume_mounts_are_deduplicated_by_path_first_wins() -> None:
    spec = {
        "volumes": [{"name": "other", "emptyDir": {}}],
        "containers": [{"image": "a:1", "volumeMounts": [{"name": "other", "mountPath": "/workspace"}]}],
    }
    manifest = built(make_job(plugin={"podSpec": spec})).manifest
    assert container(manifest, "container-0")["volumeMounts"] == [
        {"name": "other", "mountPath": "/workspace"}
    ]


# ---- resource classes (§3.4) ---------------------------------------------------------------------

CLASSES = {
    "small": {"resource": {"requests": {"cpu": "500m"}}},
    "large": {"resource": {"limits": {"memory": "8Gi"}}, "nodeSelector": {"size": "large"}},
}


@pytest.mark.parametrize(
    ("tags", "default", "expected"),
    [
        pytest.param({"queue": "k"}, "", None, id="no-tag-no-default"),
        pytest.param({"queue": "k"}, "small", {"requests": {"cpu": "500m"}}, id="default-class"),
        pytest.param(
            {"resource_class": "large"}, "small", {"limits": {"memory": "8Gi"}}, id="tag-beats-default"
        ),
    ],
)
def test_resource_class_selection(tags: dict, default: str, expected: dict | None) -> None:
    manifest = built(
        make_job(tags=tags), resource_classes=CLASSES, default_resource_class_name=default
    ).manifest
    assert container(manifest, "container-0").get("resources") == expected
    assert "resources" not in container(manifest, "agent")
    assert "resources" not in container(manifest, "checkout")


def test_an_unknown_resource_class_is_a_build_error() -> None:
    with pytest.raises(BuildError) as caught:
        build(make_job(tags={"resource_class": "huge"}), config=make_config(resource_classes=CLASSES))
    assert caught.value.field == "resource_class"
    assert "'huge' does not exist (known: large, small)" in caught.value.message


def test_a_resource_class_tag_without_configured_classes_is_a_build_error() -> None:
    with pytest.raises(BuildError, match="none are configured"):
        build(make_job(tags={"resource_class": "large"}), config=make_config())


# ---- metadata (§4.2) ------------------------------------------------------------------------------


def test_invalid_agent_tags_become_warnings_not_labels() -> None:
    result = built(make_job(tags={"queue": "kubernetes", "bad key!": "x", "os": "a" * 64}))
    labels = result.manifest["metadata"]["labels"]
    assert labels["tag.buildkite.com/queue"] == "kubernetes"
    assert not any("bad" in key or key.endswith("/os") for key in labels)
    assert len(result.warnings) == 2


def test_no_controller_id_label_without_an_id() -> None:
    labels = built(make_job()).manifest["metadata"]["labels"]
    assert labels == {"buildkite.com/job-uuid": JOB_UUID, "tag.buildkite.com/queue": "kubernetes"}


def test_build_does_not_mutate_its_inputs() -> None:
    plugin = {"podSpec": {"containers": [{"image": "a:1", "command": ["x"]}]}, "sidecars": [{"image": "r:1"}]}
    job = make_job(plugin=plugin)
    config = make_config(default_checkout_params={"envFrom": [{"secretRef": {"name": "s"}}]})
    first = build(job, config=config).manifest
    first["spec"]["containers"][0]["env"].clear()
    first["spec"]["containers"][-1]["envFrom"][0]["secretRef"]["name"] = "changed"
    assert build(job, config=config).manifest != first
    assert config.default_checkout_params.env_from == [{"secretRef": {"name": "s"}}]


def test_the_same_job_always_builds_the_same_pod() -> None:
    job = make_job(plugin={"podSpec": {"containers": [{"image": f"img{i}:1"} for i in range(5)]}})
    assert build(job, config=make_config()) == build(job, config=make_config())


# ---- build errors ----------------------------------------------------------------------------------

BUILD_ERRORS = [
    pytest.param(
        make_job(plugin={}), {"prohibit_kubernetes_plugin": True}, "kubernetes", "prohibited", id="prohibit"
    ),
    pytest.param(
        make_job(plugin={"podTemplate": "t"}), {}, "kubernetes.podTemplate", "not fetched", id="template"
    ),
    pytest.param(
        make_job(BUILDKITE_IMAGE="Bad Image"), {}, "image", "invalid reference", id="bad-image-attribute"
    ),
    pytest.param(
        make_job(plugin={"metadata": {"labels": {"a": "b c"}}}),
        {},
        "kubernetes.metadata.labels.a",
        "not a valid label value",
        id="bad-label-value",
    ),
    pytest.param(
        make_job(plugin={"metadata": {"annotations": {"-x": "1"}}}),
        {},
        "kubernetes.metadata.annotations",
        "not a valid annotation key",
        id="bad-annotation-key",
    ),
    pytest.param(
        make_job(plugin={"podSpec": {"volumes": [{"name": "workspace", "emptyDir": {}}]}}),
        {},
        "volumes[1].name",
        "used twice",
        id="duplicate-workspace-volume",
    ),
    pytest.param(
        make_job(plugin={"podSpec": {"containers": [{"name": "agent", "image": "a:1"}]}}),
        {},
        "containers[1].name",
        "'agent' is used twice",
        id="user-container-named-agent",
    ),
    pytest.param(
        make_job(plugin={"podSpec": {"initContainers": [{"image": "a:1"}]}}),
        {},
        "initContainers[1].name",
        "is required",
        id="user-init-container-without-name",
    ),
    pytest.param(
        make_job(plugin={"sidecars": [{"name": "copy-agent", "image": "a:1"}]}),
        {},
        "initContainers[1].name",
        "'copy-agent' is used twice",
        id="sidecar-named-copy-agent",
    ),
    pytest.param(
        make_job(plugin={"podSpecPatch": {"restartPolicy": "Always"}}),
        {},
        "restartPolicy",
        "Never",
        id="restart-policy-patched",
    ),
    pytest.param(
        make_job(uuid="Not/A/UUID"), {}, "job.uuid", "not a valid Kubernetes name", id="hostile-uuid"
    ),
    pytest.param(
        make_job(plugin={"podSpecPatch": {"containers": "nope"}}),
        {},
        "kubernetes.podSpecPatch.containers",
        "must be a list",
        id="patch-type-error",
    ),
]


@pytest.mark.parametrize(("job", "config", "field", "message"), BUILD_ERRORS)
def test_jobs_that_cannot_get_a_pod_fail_with_the_field(
    job: Job, config: dict, field: str, message: str
) -> None:
    with pytest.raises(BuildError) as caught:
        build(job, config=make_config(**config))
    assert caught.value.field == field
    assert message in caught.value.message


def test_strict_mode_turns_unknown_plugin_keys_into_errors() -> None:
    job = make_job(plugin={"podSpec": {"containers": [{"image": "a:1", "imagePullPolicyy": "Always"}]}})
    assert built(job).warnings == (
        "kubernetes.podSpec.containers[0].imagePullPolicyy: unknown field, ignored",
    )
    with pytest.raises(BuildError, match="unknown field"):
        build(job, config=make_config(), strict=True)
