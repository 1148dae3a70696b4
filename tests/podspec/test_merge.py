"""Strategic merge patch (podspec.merge): merge keys, replaced lists, directives, ordering, errors,
purity, and properties that must hold for any patch."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podspec.errors import BuildError
from podspec.merge import MAX_DEPTH, strategic_merge


def c(name: str, **fields: Any) -> dict[str, Any]:
    """A container (or any item keyed by ``name``) with the given fields."""
    return {"name": name, **fields}


def names(items: list[dict[str, Any]]) -> list[Any]:
    return [item.get("name") for item in items]


STACK = {
    "containers": [c("container-0", image="golang"), c("agent", image="agent"), c("checkout", image="agent")]
}

# ---------------------------------------------------------------------------------------------------
# Merge keys and strategies from the schema

MERGE_CASES = [
    pytest.param(
        {"containers": [c("a", image="x", workingDir="/w")]},
        {"containers": [c("a", image="y")]},
        {"containers": [c("a", image="y", workingDir="/w")]},
        id="containers-merge-by-name",
    ),
    pytest.param(
        {"initContainers": [c("copy-agent", image="agent"), c("user", image="u")]},
        {"initContainers": [c("user", image="v")]},
        {"initContainers": [c("copy-agent", image="agent"), c("user", image="v")]},
        id="init-containers-merge-by-name",
    ),
    pytest.param(
        {"ephemeralContainers": [c("debug", image="busybox")]},
        {"ephemeralContainers": [c("debug", tty=True)]},
        {"ephemeralContainers": [c("debug", image="busybox", tty=True)]},
        id="ephemeral-containers-merge-by-name",
    ),
    pytest.param(
        {"containers": [c("a", env=[c("A", value="1"), c("B", value="2")])]},
        {"containers": [c("a", env=[c("B", value="changed")])]},
        {"containers": [c("a", env=[c("A", value="1"), c("B", value="changed")])]},
        id="env-merges-by-name-inside-a-container",
    ),
    pytest.param(
        {"containers": [c("a", env=[c("T", valueFrom={"secretKeyRef": {"name": "s", "key": "k"}})])]},
        {"containers": [c("a", env=[c("T", valueFrom={"secretKeyRef": {"key": "other"}})])]},
        {"containers": [c("a", env=[c("T", valueFrom={"secretKeyRef": {"name": "s", "key": "other"}})])]},
        id="env-value-from-merges-as-nested-maps",
    ),
    pytest.param(
        {"containers": [c("a", volumeMounts=[{"name": "ws", "mountPath": "/workspace"}])]},
        {
            "containers": [
                c("a", volumeMounts=[{"name": "cache", "mountPath": "/workspace", "readOnly": True}])
            ]
        },
        {
            "containers": [
                c("a", volumeMounts=[{"name": "cache", "mountPath": "/workspace", "readOnly": True}])
            ]
        },
        id="volume-mounts-merge-by-mount-path",
    ),
    pytest.param(
        {"containers": [c("a", ports=[{"containerPort": 80, "name": "http"}, {"containerPort": 443}])]},
        {"containers": [c("a", ports=[{"containerPort": 80, "hostPort": 8080}])]},
        {
            "containers": [
                c(
                    "a",
                    ports=[{"containerPort": 80, "name": "http", "hostPort": 8080}, {"containerPort": 443}],
                )
            ]
        },
        id="ports-merge-by-container-port",
    ),
    pytest.param(
        {"containers": [c("a", volumeDevices=[{"devicePath": "/dev/x", "name": "d1"}])]},
        {"containers": [c("a", volumeDevices=[{"devicePath": "/dev/x", "name": "d2"}])]},
        {"containers": [c("a", volumeDevices=[{"devicePath": "/dev/x", "name": "d2"}])]},
        id="volume-devices-merge-by-device-path",
    ),
    pytest.param(
        {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}]},
        {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}, {"ip": "10.0.0.2", "hostnames": ["c"]}]},
        {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}, {"ip": "10.0.0.2", "hostnames": ["c"]}]},
        id="host-aliases-merge-by-ip-and-hostnames-are-replaced",
    ),
    pytest.param(
        {"volumes": [c("workspace", emptyDir={}), c("hooks", configMap={"name": "h"})]},
        {"volumes": [c("hooks", configMap={"defaultMode": 493})]},
        {"volumes": [c("workspace", emptyDir={}), c("hooks", configMap={"name": "h", "defaultMode": 493})]},
        id="volumes-merge-by-name",
    ),
    pytest.param(
        {"imagePullSecrets": [c("a")]},
        {"imagePullSecrets": [c("b")]},
        {"imagePullSecrets": [c("b"), c("a")]},
        id="image-pull-secrets-merge-by-name",
    ),
    pytest.param(
        {"topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}]},
        {"topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}]},
        {"topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}]},
        id="topology-spread-merges-by-topology-key",
    ),
    pytest.param(
        {"containers": [c("a", args=["one", "two"], command=["sh"])]},
        {"containers": [c("a", args=["three"])]},
        {"containers": [c("a", args=["three"], command=["sh"])]},
        id="args-are-replaced",
    ),
    pytest.param(
        {"containers": [c("a", command=["sh", "-c"])]},
        {"containers": [c("a", command=["bash"])]},
        {"containers": [c("a", command=["bash"])]},
        id="command-is-replaced",
    ),
    pytest.param(
        {"containers": [c("a", envFrom=[{"secretRef": {"name": "one"}}])]},
        {"containers": [c("a", envFrom=[{"configMapRef": {"name": "two"}}])]},
        {"containers": [c("a", envFrom=[{"configMapRef": {"name": "two"}}])]},
        id="env-from-is-replaced",
    ),
    pytest.param(
        {"tolerations": [{"key": "a", "operator": "Exists"}]},
        {"tolerations": [{"key": "b", "operator": "Exists"}]},
        {"tolerations": [{"key": "b", "operator": "Exists"}]},
        id="tolerations-are-replaced",
    ),
    pytest.param(
        {"tolerations": [{"key": "a"}]},
        {"tolerations": [{"key": "b", "value": None}]},
        {"tolerations": [{"key": "b"}]},
        id="replaced-lists-drop-nulls-inside-their-maps",
    ),
    pytest.param(
        {"dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["a"]}},
        {"dnsConfig": {"nameservers": ["8.8.8.8"]}},
        {"dnsConfig": {"nameservers": ["8.8.8.8"], "searches": ["a"]}},
        id="nested-primitive-list-without-strategy-is-replaced",
    ),
    pytest.param(
        {"nodeSelector": {"a": "1", "b": "2"}},
        {"nodeSelector": {"b": "3", "c": "4"}},
        {"nodeSelector": {"a": "1", "b": "3", "c": "4"}},
        id="node-selector-keys-merge",
    ),
    pytest.param(
        {"containers": [c("a", resources={"requests": {"cpu": "1"}, "limits": {"cpu": "2"}})]},
        {"containers": [c("a", resources={"limits": {"memory": "1Gi"}})]},
        {
            "containers": [
                c("a", resources={"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "1Gi"}})
            ]
        },
        id="resources-merge-as-maps",
    ),
    pytest.param(
        {"securityContext": {"runAsUser": 1000, "fsGroup": 1}},
        {"securityContext": {"runAsUser": 0}},
        {"securityContext": {"runAsUser": 0, "fsGroup": 1}},
        id="pod-security-context-merges",
    ),
    pytest.param(
        {
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [1]}}
            }
        },
        {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}},
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [1]}
                },
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
            }
        },
        id="affinity-merges-deeply",
    ),
    pytest.param(
        {"restartPolicy": "Never", "activeDeadlineSeconds": 10},
        {"restartPolicy": "Always"},
        {"restartPolicy": "Always", "activeDeadlineSeconds": 10},
        id="scalars-are-replaced",
    ),
    pytest.param({}, {"hostNetwork": True}, {"hostNetwork": True}, id="new-scalar-is-added"),
    pytest.param(
        {"futureField": {"a": 1, "b": {"c": 2}}},
        {"futureField": {"b": {"d": 3}}},
        {"futureField": {"a": 1, "b": {"c": 2, "d": 3}}},
        id="unknown-map-field-merges-as-a-plain-map",
    ),
    pytest.param(
        {"futureList": [{"name": "a"}, {"name": "b"}]},
        {"futureList": [{"name": "c"}]},
        {"futureList": [{"name": "c"}]},
        id="unknown-list-field-is-replaced",
    ),
    pytest.param(
        {"futureField": [1, 2]},
        {"futureField": {"now": "a map"}},
        {"futureField": {"now": "a map"}},
        id="unknown-field-changing-type-is-replaced",
    ),
    pytest.param(
        {"containers": [c("a", image={"weird": 1})]},
        {"containers": [c("a", image="fixed")]},
        {"containers": [c("a", image="fixed")]},
        id="scalar-field-holding-a-map-is-replaced-by-a-scalar",
    ),
    pytest.param(
        {"containers": [c("a", env=[c("A", value="1")])]},
        {"containers": [c("b", env=[c("X", value=None), c("Y", value="2")], image=None)]},
        {"containers": [c("b", env=[c("X"), c("Y", value="2")]), c("a", env=[c("A", value="1")])]},
        id="new-items-drop-their-nulls",
    ),
]


@pytest.mark.parametrize(("original", "patch", "expected"), MERGE_CASES)
def test_patch_merges_as_the_kubernetes_patch_metadata_says(
    original: dict, patch: dict, expected: dict
) -> None:
    assert strategic_merge(original, patch) == expected


def test_patch_without_containers_leaves_containers_untouched() -> None:
    merged = strategic_merge(STACK, {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["git.internal"]}]})
    assert merged["containers"] == STACK["containers"]
    assert merged["hostAliases"] == [{"ip": "10.0.0.1", "hostnames": ["git.internal"]}]


def test_empty_containers_list_in_a_patch_changes_nothing() -> None:
    assert strategic_merge(STACK, {"containers": []}) == STACK


def test_pod_template_spec_merges_labels_and_containers() -> None:
    original = {"metadata": {"labels": {"a": "1"}}, "spec": STACK}
    patch = {"metadata": {"labels": {"b": "2"}}, "spec": {"containers": [c("agent", image="mine")]}}
    merged = strategic_merge(original, patch, type_name="PodTemplateSpec")
    assert merged["metadata"] == {"labels": {"a": "1", "b": "2"}}
    assert merged["spec"]["containers"][1] == c("agent", image="mine")


def test_container_type_can_be_merged_on_its_own() -> None:
    merged = strategic_merge(
        c("a", env=[c("A", value="1")]), {"env": [c("A", value="2")]}, type_name="Container"
    )
    assert merged == c("a", env=[c("A", value="2")])


@pytest.mark.parametrize(
    ("original", "patch", "expected"),
    [
        pytest.param(["a", "b"], ["c"], ["c", "a", "b"], id="new-values-first"),
        pytest.param(["a", "b"], ["b", "a"], ["b", "a"], id="patch-order-wins-among-patch-values"),
        pytest.param(["a", "b"], ["a", "a"], ["a", "b"], id="duplicates-collapse"),
        pytest.param(["a", "a", "b"], [], ["a", "b"], id="original-duplicates-collapse-when-merged"),
        pytest.param([], ["x", "y"], ["x", "y"], id="into-empty"),
        pytest.param([1, True, "1"], [1.0], [1.0, 1, True, "1"], id="typed-values-stay-distinct"),
    ],
)
def test_primitive_lists_with_merge_strategy_merge_as_sets(
    original: list, patch: list, expected: list
) -> None:
    merged = strategic_merge({"finalizers": original}, {"finalizers": patch}, type_name="ObjectMeta")
    assert merged == {"finalizers": expected}


# ---------------------------------------------------------------------------------------------------
# null deletes


@pytest.mark.parametrize(
    ("original", "patch", "expected"),
    [
        pytest.param(
            {"hostNetwork": True, "dnsPolicy": "x"}, {"hostNetwork": None}, {"dnsPolicy": "x"}, id="pod-field"
        ),
        pytest.param({}, {"hostNetwork": None}, {}, id="absent-field"),
        pytest.param(
            {"containers": [c("a", image="x", workingDir="/w")]},
            {"containers": [c("a", workingDir=None)]},
            {"containers": [c("a", image="x")]},
            id="container-field",
        ),
        pytest.param(
            {"containers": [c("a", env=[c("A", value="1")])]},
            {"containers": [c("a", env=[c("A", value=None)])]},
            {"containers": [c("a", env=[c("A")])]},
            id="env-item-field",
        ),
        pytest.param(
            {"nodeSelector": {"a": "1", "b": "2"}},
            {"nodeSelector": {"a": None}},
            {"nodeSelector": {"b": "2"}},
            id="map-key",
        ),
        pytest.param(STACK, {"containers": None}, {}, id="whole-list"),
    ],
)
def test_null_deletes_the_key(original: dict, patch: dict, expected: dict) -> None:
    assert strategic_merge(original, patch) == expected


# ---------------------------------------------------------------------------------------------------
# Ordering, as apimachinery's mergeSortedSlice produces it


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        pytest.param(
            [c("sidecar")], ["sidecar", "container-0", "agent", "checkout"], id="new-item-goes-first"
        ),
        pytest.param(
            [c("s1"), c("s2")],
            ["s1", "s2", "container-0", "agent", "checkout"],
            id="new-items-keep-patch-order",
        ),
        pytest.param(
            [c("agent", image="x"), c("sidecar")],
            ["container-0", "agent", "sidecar", "checkout"],
            id="new-item-follows-the-patched-item-before-it",
        ),
        pytest.param(
            [c("sidecar"), c("agent", image="x")],
            ["sidecar", "container-0", "agent", "checkout"],
            id="new-item-before-a-patched-item-goes-first",
        ),
        pytest.param(
            [c("checkout", image="x"), c("container-0", image="y")],
            ["agent", "checkout", "container-0"],
            id="patched-items-take-patch-order-around-untouched-ones",
        ),
        pytest.param(
            [c("agent", image="x")], ["container-0", "agent", "checkout"], id="patching-in-place-keeps-order"
        ),
    ],
)
def test_merged_list_order_matches_apimachinery(patch: list, expected: list) -> None:
    assert names(strategic_merge(STACK, {"containers": patch})["containers"]) == expected


def test_new_env_var_goes_before_existing_ones() -> None:
    original = {"containers": [c("a", env=[c("A", value="1"), c("B", value="2")])]}
    merged = strategic_merge(original, {"containers": [c("a", env=[c("NEW", value="3")])]})
    assert names(merged["containers"][0]["env"]) == ["NEW", "A", "B"]


# ---------------------------------------------------------------------------------------------------
# Directives

DIRECTIVE_CASES = [
    pytest.param(
        {"securityContext": {"runAsUser": 1, "fsGroup": 2}},
        {"securityContext": {"$patch": "replace", "runAsUser": 3}},
        {"securityContext": {"runAsUser": 3}},
        id="patch-replace-on-a-map",
    ),
    pytest.param(
        {"securityContext": {"runAsUser": 1}, "hostPID": True},
        {"securityContext": {"$patch": "delete"}},
        {"hostPID": True},
        id="patch-delete-on-a-map-removes-it",
    ),
    pytest.param(
        {"securityContext": {"runAsUser": 1}},
        {"securityContext": {"$patch": "merge", "fsGroup": 2}},
        {"securityContext": {"runAsUser": 1, "fsGroup": 2}},
        id="patch-merge-on-a-map-is-the-default",
    ),
    pytest.param(
        {"securityContext": {"runAsUser": 1}},
        {"securityContext": {"$patch": "replace", "fsGroup": None, "seLinuxOptions": {"$patch": "replace"}}},
        {"securityContext": {"seLinuxOptions": {}}},
        id="replacement-map-drops-nulls-and-nested-directives",
    ),
    pytest.param(
        {},
        {"securityContext": {"$patch": "replace", "runAsUser": 3}},
        {"securityContext": {"runAsUser": 3}},
        id="patch-replace-on-an-absent-map",
    ),
    pytest.param(
        STACK,
        {"$patch": "replace", "containers": [c("only")]},
        {"containers": [c("only")]},
        id="patch-replace-on-the-whole-spec",
    ),
    pytest.param(STACK, {"$patch": "delete"}, {}, id="patch-delete-on-the-whole-spec"),
    pytest.param(
        STACK,
        {"containers": [c("checkout", **{"$patch": "delete"})]},
        {"containers": [c("container-0", image="golang"), c("agent", image="agent")]},
        id="list-item-patch-delete-removes-it",
    ),
    pytest.param(
        STACK,
        {"containers": [c("nope", **{"$patch": "delete"})]},
        STACK,
        id="deleting-an-absent-item-is-a-no-op",
    ),
    pytest.param(
        {"containers": [c("a", image="x", workingDir="/w")]},
        {"containers": [c("a", image="y", **{"$patch": "replace"})]},
        {"containers": [c("a", image="y")]},
        id="list-item-patch-replace-replaces-just-that-item",
    ),
    pytest.param(
        {"containers": [c("a", image="x", workingDir="/w")]},
        {"containers": [c("a", image="y", **{"$patch": "merge"})]},
        {"containers": [c("a", image="y", workingDir="/w")]},
        id="list-item-patch-merge-is-the-default",
    ),
    pytest.param(
        STACK,
        {"containers": [{"$patch": "replace"}, c("only", image="i")]},
        {"containers": [c("only", image="i")]},
        id="list-marker-patch-replace-replaces-the-whole-list",
    ),
    pytest.param(
        STACK,
        {"containers": [{"$patch": "replace"}]},
        {"containers": []},
        id="list-marker-patch-replace-alone-empties-the-list",
    ),
    pytest.param(
        {"containers": [c("a")]},
        {"containers": [{"$patch": "merge"}, c("b")]},
        {"containers": [c("b"), c("a")]},
        id="list-marker-patch-merge-is-the-default",
    ),
    pytest.param(
        {"containers": [c("a", image="old", workingDir="/w")]},
        {"containers": [c("a", **{"$patch": "delete"}), c("a", image="new")]},
        {"containers": [c("a", image="new")]},
        id="delete-then-add-recreates-the-item",
    ),
    pytest.param(
        {"finalizers": ["a", "b", "c"]},
        {"$deleteFromPrimitiveList/finalizers": ["b", "zzz"]},
        {"finalizers": ["a", "c"]},
        id="delete-from-primitive-list",
    ),
    pytest.param(
        {"finalizers": ["a", "b"]},
        {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]},
        {"finalizers": ["c", "b"]},
        id="delete-from-primitive-list-with-additions",
    ),
    pytest.param(
        {},
        {"$deleteFromPrimitiveList/finalizers": ["a"]},
        {},
        id="delete-from-absent-primitive-list-adds-nothing",
    ),
    pytest.param(
        {"finalizers": ["a", "b", "c"]},
        {"$setElementOrder/finalizers": ["c", "a", "b"]},
        {"finalizers": ["c", "a", "b"]},
        id="set-element-order-on-a-primitive-list",
    ),
]


@pytest.mark.parametrize(("original", "patch", "expected"), DIRECTIVE_CASES)
def test_directive_is_honoured(original: dict, patch: dict, expected: dict) -> None:
    type_name = "ObjectMeta" if "finalizers" in str(patch) else "PodSpec"
    assert strategic_merge(original, patch, type_name=type_name) == expected


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        pytest.param(
            {"$setElementOrder/containers": [c("checkout"), c("agent"), c("container-0")]},
            ["checkout", "agent", "container-0"],
            id="reorders-without-changing-items",
        ),
        pytest.param(
            {
                "$setElementOrder/containers": [c("agent"), c("new"), c("container-0"), c("checkout")],
                "containers": [c("new")],
            },
            ["agent", "new", "container-0", "checkout"],
            id="places-new-items",
        ),
        pytest.param(
            {"$setElementOrder/containers": [c("checkout"), c("container-0")]},
            ["agent", "checkout", "container-0"],
            id="unlisted-items-interleave-by-original-order",
        ),
        pytest.param(
            {"$setElementOrder/containers": [c("ghost"), c("checkout")]},
            ["container-0", "agent", "checkout"],
            id="listed-but-absent-items-are-ignored",
        ),
    ],
)
def test_set_element_order_overrides_the_merged_order(patch: dict, expected: list) -> None:
    merged = strategic_merge(STACK, patch)
    assert names(merged["containers"]) == expected
    assert merged["containers"][names(merged["containers"]).index("agent")] == c("agent", image="agent")


def test_set_element_order_for_an_absent_list_adds_nothing() -> None:
    assert strategic_merge({}, {"$setElementOrder/volumes": [c("x")]}) == {}


def test_retain_keys_switches_a_volume_source() -> None:
    original = {"volumes": [c("workspace", emptyDir={"sizeLimit": "1Gi"})]}
    patch = {"volumes": [c("workspace", hostPath={"path": "/data"}, **{"$retainKeys": ["name", "hostPath"]})]}
    assert strategic_merge(original, patch) == {"volumes": [c("workspace", hostPath={"path": "/data"})]}


def test_without_retain_keys_a_volume_keeps_its_old_source_as_apimachinery_does() -> None:
    merged = strategic_merge(
        {"volumes": [c("w", emptyDir={})]}, {"volumes": [c("w", hostPath={"path": "/d"})]}
    )
    assert merged == {"volumes": [c("w", emptyDir={}, hostPath={"path": "/d"})]}


def test_retain_keys_is_allowed_in_maps_the_schema_does_not_know() -> None:
    merged = strategic_merge({"future": {"a": 1, "b": 2}}, {"future": {"$retainKeys": ["b", "c"], "c": 3}})
    assert merged == {"future": {"b": 2, "c": 3}}


def test_no_directive_key_survives_into_the_result() -> None:
    patch = {
        "containers": [
            {"$patch": "merge"},
            c(
                "new",
                securityContext={"$patch": "replace", "privileged": True},
                env=[c("A", **{"$patch": "merge"})],
            ),
        ],
        "volumes": [c("v", emptyDir={}, **{"$retainKeys": ["name", "emptyDir"]})],
        "tolerations": [{"key": "t", "$patch": "replace"}],
        "$setElementOrder/containers": [c("new")],
    }
    assert "$" not in repr(strategic_merge(STACK, patch))


# ---------------------------------------------------------------------------------------------------
# Bad patches name the field


BAD_PATCHES = [
    pytest.param(
        {"containers": {"name": "a"}}, "containers", "must be a list (got a map)", id="containers-as-map"
    ),
    pytest.param(
        {"containers": "a"}, "containers", "must be a list (got the string 'a')", id="containers-as-string"
    ),
    pytest.param({"securityContext": []}, "securityContext", "must be a map (got a list)", id="map-as-list"),
    pytest.param({"nodeSelector": "x"}, "nodeSelector", "must be a map", id="free-map-as-string"),
    pytest.param(
        {"containers": [c("a"), c("b"), {"image": "x"}]},
        "containers[2]",
        "missing its merge key `name`",
        id="container-without-name",
    ),
    pytest.param(
        {"containers": [c("a"), "b"]}, "containers[1]", "must be a map with a `name`", id="item-not-map"
    ),
    pytest.param({"containers": [{"name": None}]}, "containers[0]", "missing its merge key", id="null-name"),
    pytest.param(
        {"containers": [{"name": ["a"]}]}, "containers[0].name", "string or number", id="list-as-name"
    ),
    pytest.param(
        {"containers": [c("a", env=[{"value": "1"}])]},
        "containers[0].env[0]",
        "missing its merge key `name`",
        id="env-without-name",
    ),
    pytest.param(
        {"containers": [c("a", ports=[{"name": "http"}])]},
        "containers[0].ports[0]",
        "merge key `containerPort`",
        id="port-without-container-port",
    ),
    pytest.param(
        {"containers": [c("a", volumeMounts="x")]},
        "containers[0].volumeMounts",
        "must be a list",
        id="mounts-as-string",
    ),
    pytest.param(
        {"securityContext": {"$patch": "explode"}},
        "securityContext.$patch",
        "unknown directive 'explode'",
        id="bad-map-directive",
    ),
    pytest.param({"$patch": 1}, "$patch", "unknown directive 1", id="bad-top-directive"),
    pytest.param(
        {"containers": [{"$patch": "nuke"}]},
        "containers[0].$patch",
        "unknown directive",
        id="bad-list-marker",
    ),
    pytest.param(
        {"containers": [{"$patch": "delete"}]},
        "containers[0]",
        "add `name` to say which item",
        id="delete-without-key",
    ),
    pytest.param({"$frobnicate": 1}, "$frobnicate", "is not a directive", id="unknown-directive-key"),
    pytest.param({1: "x"}, "", "keys must be non-empty strings (got 1)", id="non-string-key"),
    pytest.param({"": "x"}, "", "keys must be non-empty strings", id="empty-key"),
    pytest.param({"$retainKeys": ["containers"]}, "$retainKeys", "retainKeys", id="retain-keys-on-pod-spec"),
    pytest.param(
        {"containers": [c("a", **{"$retainKeys": ["name"]})]},
        "containers[0].$retainKeys",
        "only allowed where the patch strategy is retainKeys",
        id="retain-keys-on-a-container",
    ),
    pytest.param(
        {"volumes": [c("v", **{"$retainKeys": "name"})]},
        "volumes[0].$retainKeys",
        "list of field names",
        id="retain-string",
    ),
    pytest.param(
        {"$setElementOrder/tolerations": []},
        "$setElementOrder/tolerations",
        "not a list with patch strategy merge",
        id="order-replaced-list",
    ),
    pytest.param(
        {"$setElementOrder/future": []}, "$setElementOrder/future", "not a list", id="order-unknown-field"
    ),
    pytest.param(
        {"$setElementOrder/containers": {}},
        "$setElementOrder/containers",
        "must be a list",
        id="order-not-list",
    ),
    pytest.param(
        {"$setElementOrder/containers": [{"image": "x"}]},
        "$setElementOrder/containers[0]",
        "merge key `name`",
        id="order-entry-without-key",
    ),
    pytest.param(
        {"$deleteFromPrimitiveList/containers": ["a"]},
        "$deleteFromPrimitiveList/containers",
        "use `$patch: delete` items",
        id="delete-from-keyed-list",
    ),
    pytest.param(
        {
            "containers": [c("a", env=[c("A", **{"$patch": "replace"})])],
            "$setElementOrder/volumes": [c("x"), 3],
        },
        "$setElementOrder/volumes[1]",
        "must be a map with a `name`",
        id="order-entry-not-map",
    ),
]


@pytest.mark.parametrize(("patch", "field", "message"), BAD_PATCHES)
def test_bad_patch_raises_build_error_naming_the_field(patch: dict, field: str, message: str) -> None:
    with pytest.raises(BuildError) as excinfo:
        strategic_merge(STACK, patch)
    assert excinfo.value.field == field
    assert message in excinfo.value.message


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        pytest.param(
            {"finalizers": [{"a": 1}]}, "finalizers[0]", "string or number", id="map-in-primitive-list"
        ),
        pytest.param(
            {"finalizers": [None]},
            "finalizers[0]",
            "string or number (got null)",
            id="null-in-primitive-list",
        ),
        pytest.param(
            {"finalizers": [{"$patch": "delete"}]},
            "finalizers[0]",
            "$deleteFromPrimitiveList",
            id="delete-marker",
        ),
        pytest.param(
            {"$deleteFromPrimitiveList/finalizers": [["x"]]},
            "$deleteFromPrimitiveList/finalizers[0]",
            "string or number",
            id="delete-list-value-not-scalar",
        ),
        pytest.param(
            {"$setElementOrder/finalizers": [{}]}, "$setElementOrder/finalizers[0]", "string", id="order-map"
        ),
    ],
)
def test_bad_primitive_list_patch_raises_build_error(patch: dict, field: str, message: str) -> None:
    with pytest.raises(BuildError) as excinfo:
        strategic_merge({"finalizers": ["a"]}, patch, type_name="ObjectMeta")
    assert (excinfo.value.field, message in excinfo.value.message) == (field, True)


def test_path_prefixes_the_field_of_a_build_error() -> None:
    with pytest.raises(BuildError) as excinfo:
        strategic_merge(STACK, {"containers": [c("a"), c("b"), {}]}, path="podSpecPatch")
    assert str(excinfo.value) == "podSpecPatch.containers[2]: is missing its merge key `name`"


@pytest.mark.parametrize("patch", [[], "spec", None, 3], ids=["list", "string", "null", "number"])
def test_patch_that_is_not_a_map_raises_build_error(patch: Any) -> None:
    with pytest.raises(BuildError, match="must be a map") as excinfo:
        strategic_merge(STACK, patch, path="podSpecPatch")
    assert excinfo.value.field == "podSpecPatch"


def nested(depth: int, leaf: Any, *, wrap: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = wrap(value)
    return value


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param({"future": nested(10_000, 1, wrap=lambda v: {"x": v})}, id="maps"),
        pytest.param({"future": nested(10_000, 1, wrap=lambda v: [v])}, id="lists"),
        pytest.param({"tolerations": nested(10_000, 1, wrap=lambda v: [v])}, id="replaced-list"),
        pytest.param(
            {"containers": [c("a", env=[c("A", valueFrom=nested(5_000, 1, wrap=lambda v: {"x": v}))])]},
            id="in-env",
        ),
    ],
)
def test_deeply_nested_patch_raises_build_error_not_recursion_error(patch: dict) -> None:
    with pytest.raises(BuildError, match=f"nested deeper than {MAX_DEPTH} levels"):
        strategic_merge(STACK, patch)


def test_deeply_nested_original_raises_build_error() -> None:
    with pytest.raises(BuildError, match="nested too deeply"):
        strategic_merge({"future": nested(100_000, 1, wrap=lambda v: {"x": v})}, {})


def test_nesting_up_to_the_limit_is_accepted() -> None:
    deep = nested(MAX_DEPTH - 5, "leaf", wrap=lambda v: {"x": v})
    assert strategic_merge({}, {"future": deep}) == {"future": deep}


def test_malformed_original_list_items_are_kept_in_place() -> None:
    original = {"containers": ["junk", {"image": "no-name"}, c("a")], "finalizers": [{"x": 1}, "f"]}
    merged = strategic_merge(original, {"containers": [c("a", image="i"), c("b")]})
    assert merged["containers"] == ["junk", {"image": "no-name"}, c("a", image="i"), c("b")]
    meta = strategic_merge(original, {"finalizers": ["g", "f"]}, type_name="ObjectMeta")
    assert meta["finalizers"] == ["g", {"x": 1}, "f"]


def test_unknown_type_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown Kubernetes type 'Pod'"):
        strategic_merge({}, {}, type_name="Pod")


def test_original_that_is_not_a_dict_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        strategic_merge([], {})  # type: ignore[arg-type]


def test_large_patch_merges_quickly_in_linear_time() -> None:
    env = [c(f"V{i}", value=str(i)) for i in range(20_000)]
    original = {"containers": [c("a", env=env)]}
    merged = strategic_merge(original, {"containers": [c("a", env=list(reversed(env)))]})
    assert names(merged["containers"][0]["env"]) == names(list(reversed(env)))


# ---------------------------------------------------------------------------------------------------
# Purity


def test_inputs_are_never_mutated_and_the_result_shares_nothing_with_them() -> None:
    original = {"containers": [c("a", env=[c("A", value="1")], args=["x"])], "nodeSelector": {"k": "v"}}
    patch = {
        "containers": [c("b", env=[c("B")]), c("a", env=[c("A", value="2")])],
        "tolerations": [{"key": "t"}],
    }
    before = copy.deepcopy((original, patch))
    merged = strategic_merge(original, patch)
    assert (original, patch) == before
    assert not _container_ids(merged) & (_container_ids(original) | _container_ids(patch))


def _container_ids(value: Any) -> set[int]:
    """ids of every dict and list inside ``value``."""
    found: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            found.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
    return found


# ---------------------------------------------------------------------------------------------------
# Properties

_text = st.text(alphabet="abc", max_size=2)


def _keyed(
    key: str, keys: list[Any], fields: dict[str, st.SearchStrategy], *, nullable: bool
) -> st.SearchStrategy:
    values = {name: (strategy | st.none()) if nullable else strategy for name, strategy in fields.items()}
    item = st.fixed_dictionaries({key: st.sampled_from(keys)}, optional=values)
    return st.lists(item, max_size=4, unique_by=lambda d: d[key])


def _container(nullable: bool) -> st.SearchStrategy:
    maybe = (lambda s: s | st.none()) if nullable else (lambda s: s)
    return st.fixed_dictionaries(
        {"name": st.sampled_from(["container-0", "agent", "checkout", "sidecar", "x"])},
        optional={
            "image": maybe(st.sampled_from(["a", "b"])),
            "args": maybe(st.lists(_text, max_size=3)),
            "env": maybe(_keyed("name", ["A", "B", "C"], {"value": _text}, nullable=nullable)),
            "volumeMounts": maybe(_keyed("mountPath", ["/w", "/x"], {"name": _text}, nullable=nullable)),
            "ports": maybe(
                _keyed("containerPort", [80, 443], {"protocol": st.just("TCP")}, nullable=nullable)
            ),
            "securityContext": maybe(
                st.fixed_dictionaries(
                    {}, optional={"runAsUser": maybe(st.integers(0, 2)), "privileged": st.booleans()}
                )
            ),
        },
    )


def _pod_spec(nullable: bool) -> st.SearchStrategy:
    maybe = (lambda s: s | st.none()) if nullable else (lambda s: s)
    return st.fixed_dictionaries(
        {},
        optional={
            "containers": maybe(st.lists(_container(nullable), max_size=4, unique_by=lambda d: d["name"])),
            "initContainers": maybe(
                st.lists(_container(nullable), max_size=2, unique_by=lambda d: d["name"])
            ),
            "volumes": maybe(
                _keyed(
                    "name",
                    ["w", "v"],
                    {"emptyDir": st.just({}), "hostPath": st.just({"path": "/p"})},
                    nullable=nullable,
                )
            ),
            "hostAliases": maybe(
                _keyed(
                    "ip",
                    ["10.0.0.1", "10.0.0.2"],
                    {"hostnames": st.lists(_text, max_size=2)},
                    nullable=nullable,
                )
            ),
            "tolerations": maybe(st.lists(st.fixed_dictionaries({"key": _text}), max_size=2)),
            "nodeSelector": maybe(st.dictionaries(st.sampled_from(["k1", "k2"]), maybe(_text), max_size=2)),
            "restartPolicy": maybe(st.sampled_from(["Never", "Always"])),
        },
    )


@settings(max_examples=75, deadline=None, derandomize=True)
@given(original=_pod_spec(nullable=False))
def test_merging_an_empty_patch_is_identity(original: dict) -> None:
    assert strategic_merge(original, {}) == original


@settings(max_examples=100, deadline=None, derandomize=True)
@given(original=_pod_spec(nullable=False), patch=_pod_spec(nullable=True))
def test_merging_a_patch_twice_equals_merging_it_once(original: dict, patch: dict) -> None:
    once = strategic_merge(original, patch)
    assert strategic_merge(once, patch) == once


@settings(max_examples=75, deadline=None, derandomize=True)
@given(original=_pod_spec(nullable=False), patch=_pod_spec(nullable=True))
def test_inputs_are_never_mutated_for_any_patch(original: dict, patch: dict) -> None:
    before = copy.deepcopy((original, patch))
    strategic_merge(original, patch)
    assert (original, patch) == before


@settings(max_examples=75, deadline=None, derandomize=True)
@given(original=_pod_spec(nullable=False), patch=_pod_spec(nullable=True))
def test_every_container_named_in_a_patch_or_the_original_survives(original: dict, patch: dict) -> None:
    merged = strategic_merge(original, patch)
    if isinstance(patch.get("containers"), list):
        expected = set(names(original.get("containers", []))) | set(names(patch["containers"]))
        assert set(names(merged["containers"])) == expected
        patched_images = {p["name"]: p["image"] for p in patch["containers"] if p.get("image") is not None}
        assert all(
            m.get("image") == patched_images.get(m["name"], m.get("image")) for m in merged["containers"]
        )
    elif "containers" not in patch:
        assert merged.get("containers") == original.get("containers")
