"""The names podspec exports are its contract with the service; pin them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import podspec
from podspec import BuildError, build, pod_template_name
from tests.podspec.builders import make_config, make_job


def test_every_exported_name_exists_and_nothing_else_is_advertised() -> None:
    assert sorted(podspec.__all__) == sorted(set(podspec.__all__))
    for name in podspec.__all__:
        assert getattr(podspec, name) is not None
    assert {"build", "pod_template_name", "BuiltPod", "PodConfig", "Job", "BuildError"} <= set(
        podspec.__all__
    )


def test_the_pure_core_never_imports_the_service_or_does_io() -> None:
    forbidden = re.compile(r"^\s*(from|import) (app|httpx|kubernetes|requests|socket|subprocess)\b", re.M)
    for path in Path(podspec.__file__).parent.glob("*.py"):
        if not path.name.startswith("_gen"):
            assert not forbidden.search(path.read_text()), path.name


@pytest.mark.parametrize("template", [[], "spec", {"containers": "x"}, {"containers": [{"image": 3}]}])
def test_a_malformed_pod_template_is_a_build_error(template: object) -> None:
    with pytest.raises(BuildError) as caught:
        build(make_job(plugin={"podTemplate": "t"}), config=make_config(), pod_template_spec=template)  # type: ignore[arg-type]
    assert caught.value.field.startswith("podTemplate[t].template.spec")


def test_pod_template_name_reports_unreadable_plugins_like_build() -> None:
    with pytest.raises(BuildError):
        pod_template_name(make_job(BUILDKITE_PLUGINS="{"))
