"""Properties of build() over generated input: hostile plugin configs only ever raise BuildError, and
type-correct plugin configs give pods the strict Kubernetes schema accepts (or a BuildError)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podspec import BuildError, Job, build
from podspec.gojson import Spec, load_table
from podspec.job import KUBERNETES_PLUGIN_KEY
from tests.podspec.builders import make_config, make_job
from tests.podspec.schema import pod_schema_errors

TABLE = load_table()
CONFIG = make_config()
PLUGIN_KEYS = [
    "podSpec", "podSpecPatch", "podTemplate", "gitEnvFrom", "sidecars", "metadata", "checkout",
    "commandParams", "sidecarParams", "extraVolumeMounts", "jobActiveDeadlineSeconds", "PODSPEC",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


def job_with_plugins(raw: str) -> Job:
    return Job(uuid="0199a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b", command="make", env={"BUILDKITE_PLUGINS": raw})


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_any_plugins_text_builds_or_raises_build_error(raw: str) -> None:
    with contextlib.suppress(BuildError):
        build(job_with_plugins(raw), config=CONFIG)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(PLUGIN_KEYS), json_values, max_size=4) | json_values)
def test_any_plugin_value_builds_or_raises_build_error(plugin: Any) -> None:
    raw = json.dumps([{KUBERNETES_PLUGIN_KEY: plugin}])
    with contextlib.suppress(BuildError):
        build(job_with_plugins(raw), config=CONFIG)


# ---- type-correct input, generated from the Kubernetes field table -------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "string": NAMES,
    "integer": st.integers(0, 100),
    "number": st.floats(0, 100),
    "boolean": st.booleans(),
    "quantity": st.sampled_from(["1", "500m", "2Gi"]),
    "int-or-string": st.integers(1, 100) | NAMES,
    "any": st.none(),
}
# Keep generated pods small and close to what pipelines write.
CONTAINER_FIELDS = (
    "name",
    "image",
    "command",
    "args",
    "env",
    "envFrom",
    "volumeMounts",
    "resources",
    "workingDir",
)


def value_for(spec: Spec, depth: int) -> st.SearchStrategy[Any]:
    if isinstance(spec, str):
        return SCALARS[spec]
    kind, arg = spec
    if kind == "list":
        return st.lists(value_for(arg, depth), max_size=2)
    if kind == "map":
        return st.dictionaries(NAMES, value_for(arg, depth), max_size=2)
    if kind == "enum":
        return st.sampled_from(arg)
    return object_for(arg, depth + 1)


def object_for(type_name: str, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    fields = {k: v for k, v in TABLE[type_name].items() if not k.startswith("$")}
    if type_name == "Container":
        fields = {k: v for k, v in fields.items() if k in CONTAINER_FIELDS}
    required = [f for f in TABLE[type_name].get("$required", []) if f in fields]
    optional = {} if depth > 3 else {k: v for k, v in fields.items() if k not in required}
    return st.fixed_dictionaries(
        {k: value_for(fields[k], depth) for k in required},
        optional={k: value_for(v, depth) for k, v in list(optional.items())[:12]},
    )


containers = st.lists(
    object_for("Container", 1).map(lambda c: {**c, "image": "alpine:3.20"}),
    max_size=3,
    unique_by=lambda c: c.get("name"),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(containers, st.lists(object_for("EnvFromSource", 1), max_size=2), st.booleans())
def test_type_correct_plugins_give_schema_valid_pods(
    user_containers: list[dict[str, Any]], env_from: list[dict[str, Any]], skip_checkout: bool
) -> None:
    plugin = {
        "podSpec": {"containers": user_containers},
        "gitEnvFrom": env_from,
        "checkout": {"skip": skip_checkout},
    }
    try:
        manifest = build(make_job(plugin=plugin), config=CONFIG).manifest
    except BuildError:
        return
    assert pod_schema_errors(manifest) == []
