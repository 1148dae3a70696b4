"""Pull policies and imagecheck-* init containers (reference §4.4), as a table of named cases."""

from __future__ import annotations

from typing import Any

import pytest

from podspec import BuildError, build
from tests.podspec.builders import AGENT_IMAGE, DIGEST_IMAGE, container, make_config, make_job, names
from tests.podspec.schema import assert_valid_pod

GO = "golang:1.23"
GO_PINNED = "golang@sha256:" + "e" * 64


def built(
    containers: list[dict[str, Any]], *, init: list[dict[str, Any]] | None = None, **config: Any
) -> dict:
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    manifest = build(make_job(plugin={"podSpec": spec}), config=make_config(**config)).manifest
    assert_valid_pod(manifest)
    return manifest


def checks(manifest: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        c["name"]: (c["image"], c["imagePullPolicy"])
        for c in manifest["spec"]["initContainers"]
        if c["name"].startswith("imagecheck-")
    }


# (container, config) → (imagecheck-0 policy or None, container-0 policy)
POLICY_TABLE = [
    pytest.param({"image": GO}, {}, "Always", "IfNotPresent", id="tag-defaults-to-always-then-downgrades"),
    pytest.param(
        {"image": GO_PINNED}, {}, "IfNotPresent", "IfNotPresent", id="digest-pinned-is-if-not-present"
    ),
    pytest.param(
        {"image": GO, "imagePullPolicy": "IfNotPresent"}, {}, "IfNotPresent", "IfNotPresent", id="own"
    ),
    pytest.param({"image": GO, "imagePullPolicy": "Never"}, {}, "Never", "Never", id="own-never"),
    pytest.param(
        {"image": GO, "imagePullPolicy": "Always"}, {}, "Always", "IfNotPresent", id="own-always-downgraded"
    ),
    pytest.param(
        {"image": GO},
        {"default_image_pull_policy": "IfNotPresent"},
        "IfNotPresent",
        "IfNotPresent",
        id="default",
    ),
    pytest.param({"image": GO}, {"default_image_pull_policy": "Never"}, "Never", "Never", id="default-never"),
    pytest.param(
        {"image": GO},
        {"default_image_pull_policy": "IfNotPresent", "default_image_check_pull_policy": "Always"},
        "Always",
        "IfNotPresent",
        id="check-policy-beats-default-for-the-check-only",
    ),
    pytest.param(
        {"image": GO},
        {"default_image_check_pull_policy": "IfNotPresent"},
        "IfNotPresent",
        "Always",
        id="no-downgrade-when-the-check-did-not-pull-always",
    ),
    pytest.param(
        {"image": GO, "imagePullPolicy": "IfNotPresent"},
        {"default_image_check_pull_policy": "Always"},
        "IfNotPresent",
        "IfNotPresent",
        id="own-policy-beats-check-policy",
    ),
    pytest.param({"image": GO}, {"skip_image_check_containers": True}, None, "Always", id="checks-skipped"),
    pytest.param({"image": AGENT_IMAGE}, {}, None, "IfNotPresent", id="agent-image-covered-by-copy-agent"),
    pytest.param(
        {"image": AGENT_IMAGE}, {"default_image_pull_policy": "Never"}, None, "Never", id="covered-with-never"
    ),
    pytest.param(
        {"image": AGENT_IMAGE},
        {"image": DIGEST_IMAGE},
        "Always",
        "IfNotPresent",
        id="same-repository-other-reference-is-checked",
    ),
]


@pytest.mark.parametrize(("user", "config", "check_policy", "container_policy"), POLICY_TABLE)
def test_pull_policies_follow_the_reference_table(
    user: dict[str, Any], config: dict[str, Any], check_policy: str | None, container_policy: str
) -> None:
    manifest = built([user], **config)
    found = checks(manifest)
    if check_policy is None:
        assert user["image"] not in {image for image, _ in found.values()}
    else:
        assert found["imagecheck-0"] == (user["image"], check_policy)
    assert container(manifest, "container-0")["imagePullPolicy"] == container_policy


def test_copy_agent_pulls_a_tagged_agent_image_always_and_a_pinned_one_if_not_present() -> None:
    assert container(built([]), "copy-agent")["imagePullPolicy"] == "Always"
    assert container(built([], image=DIGEST_IMAGE), "copy-agent")["imagePullPolicy"] == "IfNotPresent"
    pinned = built([], image=DIGEST_IMAGE, default_image_pull_policy="Never")
    assert container(pinned, "copy-agent")["imagePullPolicy"] == "Never"


def test_checks_are_numbered_in_container_order_one_per_image() -> None:
    manifest = built([{"image": "b:1"}, {"image": "a:1"}, {"image": "b:1"}, {"image": "c:1"}])
    assert [image for image, _ in checks(manifest).values()] == ["b:1", "a:1", "c:1"]
    assert list(checks(manifest)) == ["imagecheck-0", "imagecheck-1", "imagecheck-2"]


def test_shared_image_is_checked_with_the_strongest_policy() -> None:
    manifest = built(
        [{"image": GO, "imagePullPolicy": "Never"}, {"image": GO, "imagePullPolicy": "IfNotPresent"}]
    )
    assert checks(manifest) == {"imagecheck-0": (GO, "IfNotPresent")}
    assert container(manifest, "container-0")["imagePullPolicy"] == "Never"


def test_an_init_container_pulling_the_image_covers_it() -> None:
    manifest = built([{"image": GO}], init=[{"name": "warm", "image": GO, "imagePullPolicy": "Always"}])
    assert checks(manifest) == {}
    assert container(manifest, "container-0")["imagePullPolicy"] == "IfNotPresent"


def test_a_weaker_init_container_pull_does_not_cover_the_image() -> None:
    manifest = built([{"image": GO}], init=[{"name": "warm", "image": GO}])  # kubelet default IfNotPresent
    assert checks(manifest) == {"imagecheck-0": (GO, "Always")}


def test_checks_come_right_after_copy_agent_and_before_user_init_containers() -> None:
    manifest = built([{"image": GO}], init=[{"name": "warm", "image": "busybox:1.36"}])
    assert names(manifest, "initContainers") == ["copy-agent", "imagecheck-0", "warm"]


def test_images_set_by_patches_are_checked_too_unlike_the_reference() -> None:
    # agent-stack-k8s plans checks before the patches, so a bad patched image surfaces only after the
    # agent took the job; here it fails the pod's init phase, while the job can still be failed cleanly.
    job = make_job(plugin={"podSpecPatch": {"containers": [{"name": "container-0", "image": GO}]}})
    manifest = build(job, config=make_config()).manifest
    assert GO in {image for image, _ in checks(manifest).values()}
    assert container(manifest, "container-0")["image"] == GO


def test_the_step_image_is_checked_with_the_policy_of_a_fresh_image() -> None:
    job = make_job(BUILDKITE_IMAGE="node:22-alpine")
    manifest = build(job, config=make_config()).manifest
    assert ("node:22-alpine", "Always") in checks(manifest).values()
    assert container(manifest, "container-0")["imagePullPolicy"] == "IfNotPresent"


def test_images_patched_in_are_not_checked_when_checks_are_skipped() -> None:
    job = make_job(plugin={"podSpecPatch": {"containers": [{"name": "container-0", "image": GO}]}})
    manifest = build(job, config=make_config(skip_image_check_containers=True)).manifest
    assert checks(manifest) == {}


BAD_IMAGES = [
    pytest.param([{"image": "Golang:1.23"}], "containers[0].image", "must be lowercase", id="uppercase"),
    pytest.param([{"name": "x", "image": ""}], "containers[0].image", 'for container "x"', id="empty"),
    pytest.param([{"image": "a b"}], "containers[0].image", "whitespace", id="space"),
    pytest.param(
        [{"image": "ok:1"}, {"name": "one", "image": "A"}, {"name": "two", "image": "b::"}],
        "containers",
        "invalid image references:",
        id="several-are-tabled",
    ),
]


@pytest.mark.parametrize(("containers", "field", "message"), BAD_IMAGES)
def test_invalid_image_references_are_build_errors(containers: list[dict], field: str, message: str) -> None:
    with pytest.raises(BuildError) as caught:
        built(containers)
    assert caught.value.field == field
    assert message in caught.value.message


def test_an_unknown_pull_policy_is_a_build_error() -> None:
    with pytest.raises(BuildError) as caught:
        built([{"image": GO, "imagePullPolicy": "Sometimes"}])
    assert caught.value.field == "containers[0].imagePullPolicy"


def test_a_check_of_an_image_a_patch_replaced_everywhere_is_dropped() -> None:
    job = make_job(
        plugin={"podSpec": {"containers": [{"image": "alpine:3.20"}]}}, BUILDKITE_IMAGE="ubuntu:24.04"
    )
    manifest = build(job, config=make_config()).manifest
    assert checks(manifest) == {"imagecheck-0": ("ubuntu:24.04", "Always")}
