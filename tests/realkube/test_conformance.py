"""The fake apiserver (``app/simulate``) held to the real one: each scenario runs against both, and what
a client can observe must be equal. A difference is a bug in the fake (or, where the real apiserver's
answer depends on configuration, a normalisation named in ``conformance.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.simulate.kube_api import FakeKubeAPI
from tests.realkube.conformance import (
    JSON_PATCH,
    LEASES,
    MERGE_PATCH,
    PODS,
    Json,
    Target,
    diff,
    normalise,
    pod,
    status_of,
    watch,
)
from tests.realkube.controlplane import ControlPlane

pytestmark = pytest.mark.realkube

Scenario = Callable[[Target], Any]


@pytest.fixture
def targets(control_plane: ControlPlane, namespace: str) -> Iterator[tuple[Target, Target]]:
    real = Target("real", control_plane.http, namespace, lambda: control_plane.compact() and None)
    with (
        FakeKubeAPI(bookmark_interval=0.2) as fake,
        httpx.Client(base_url=fake.url, headers={"Authorization": "Bearer fake-token"}, timeout=30) as client,
    ):
        yield real, Target("fake", client, namespace, lambda: fake.expire_history() and None)


def compare(targets: tuple[Target, Target], scenario: Scenario) -> Any:
    """Run ``scenario`` on both; they must observe the same; returns the observation."""
    real, fake = targets
    seen_real, seen_fake = scenario(real), scenario(fake)
    assert seen_real == seen_fake, diff(seen_real, seen_fake)
    return seen_real


def create(target: Target, manifest: Json, template: str = PODS) -> Json:
    response = target.http.post(target.path(template), json=manifest)
    assert response.status_code == 201, (target.name, response.text)
    return response.json()


# ---- create / get / errors ----------------------------------------------------------------------------


def test_create_get_and_their_errors(targets) -> None:
    def scenario(t: Target) -> list[Any]:
        created = t.http.post(t.path(PODS), json=pod("p1"))
        got = t.http.get(t.path(PODS, "p1"))
        return [
            created.status_code,
            normalise(created.json()),
            got.status_code,
            got.json()["metadata"]["resourceVersion"] == created.json()["metadata"]["resourceVersion"],
            status_of(t.http.post(t.path(PODS), json=pod("p1"))),  # 409 AlreadyExists
            status_of(t.http.get(t.path(PODS, "missing"))),  # 404
            status_of(t.http.delete(t.path(PODS, "missing"))),
            status_of(t.http.get(t.path(LEASES, "missing"))),  # a group in the details
        ]

    seen = compare(targets, scenario)
    assert seen[0] == 201 and seen[4]["code"] == 409 and seen[5]["code"] == 404


def test_defaults_and_admission_of_a_pod_that_mounts_its_service_account_token(targets) -> None:
    manifest = pod("p")
    del manifest["spec"]["automountServiceAccountToken"]
    manifest["spec"]["initContainers"] = [{"name": "init", "image": "alpine:3.20"}]
    manifest["spec"]["tolerations"] = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]

    def scenario(t: Target) -> Any:
        return normalise(create(t, manifest)["spec"])

    spec = compare(targets, scenario)
    assert spec["volumes"][0]["name"] == "kube-api-access-<random>"
    assert [t["key"] for t in spec["tolerations"]] == [
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/not-ready",
    ]


def test_invalid_objects_are_422_with_their_causes(targets) -> None:
    bad_name = pod("Bad_Name")
    no_image = pod("no-image")
    del no_image["spec"]["containers"][0]["image"]
    bad_policy = pod("bad-policy", restartPolicy="Sometimes")
    duplicate = pod("dupe")
    duplicate["spec"]["containers"].append(dict(duplicate["spec"]["containers"][0]))

    def scenario(t: Target) -> list[Any]:
        return [
            status_of(t.http.post(t.path(PODS), json=body))
            for body in (bad_name, no_image, bad_policy, duplicate)
        ]

    seen = compare(targets, scenario)
    assert {s["code"] for s in seen} == {422}


# ---- list, selectors, watch ----------------------------------------------------------------------------


def _labelled_pods(t: Target) -> None:
    create(t, pod("a", labels={"buildkite.com/job-uuid": "1", "buildkite.com/controller-id": "x"}))
    create(t, pod("b", labels={"buildkite.com/job-uuid": "2"}))
    create(t, pod("c", labels={"app": "other"}))
    t.http.post(
        t.path(PODS, "b", "binding"),
        json={
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "b"},
            "target": {"kind": "Node", "name": "node-1"},
        },
    )


@pytest.mark.parametrize(
    "query",
    [
        {"labelSelector": "buildkite.com/job-uuid"},
        {"labelSelector": "buildkite.com/job-uuid,!buildkite.com/controller-id"},
        {"labelSelector": "buildkite.com/job-uuid,buildkite.com/controller-id=x"},
        {"labelSelector": "buildkite.com/job-uuid in (1,2),app!=other"},
        {"fieldSelector": "metadata.name=c"},
        {"fieldSelector": "spec.nodeName=node-1"},
        {"fieldSelector": "spec.nodeName="},
        {"fieldSelector": "status.phase=Pending,metadata.name!=a"},
        {"labelSelector": "app=conformance,,"},  # malformed
        {"fieldSelector": "spec.image=alpine"},  # not a supported field
    ],
    ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items()),
)
def test_list_with_selectors(targets, query: dict[str, str]) -> None:
    def scenario(t: Target) -> Any:
        _labelled_pods(t)
        response = t.http.get(t.path(PODS), params=query)
        if response.status_code != 200:
            return status_of(response)
        body = response.json()
        return [
            body["kind"],
            body["apiVersion"],
            sorted(p["metadata"]["name"] for p in body["items"]),
            sorted({k for p in body["items"] for k in p}),
        ]

    compare(targets, scenario)


def test_list_pages_with_limit_and_continue(targets) -> None:
    def scenario(t: Target) -> list[Any]:
        for name in ("p1", "p2", "p3"):
            create(t, pod(name))
        first = t.http.get(t.path(PODS), params={"limit": "2"}).json()
        rest = t.http.get(
            t.path(PODS), params={"limit": "2", "continue": first["metadata"]["continue"]}
        ).json()
        bad = t.http.get(t.path(PODS), params={"limit": "2", "continue": "not-a-token"})
        return [
            [p["metadata"]["name"] for p in first["items"]],
            first["metadata"].get("remainingItemCount"),
            [p["metadata"]["name"] for p in rest["items"]],
            "continue" in rest["metadata"],
            bad.status_code,
            bad.json()["reason"],
        ]

    assert compare(targets, scenario)[0] == ["p1", "p2"]


def test_watch_from_a_resource_version_sees_every_change_since(targets) -> None:
    def scenario(t: Target) -> list[Any]:
        create(t, pod("before", labels={"w": "yes"}))
        version = t.http.get(t.path(PODS), params={"labelSelector": "w"}).json()["metadata"][
            "resourceVersion"
        ]
        create(t, pod("p", labels={"w": "yes"}))
        assert (
            t.http.patch(
                t.path(PODS, "p"), json={"metadata": {"annotations": {"a": "1"}}}, headers=MERGE_PATCH
            ).status_code
            == 200
        )
        # Leaving the selected set is a DELETED (with the labels that had selected it), coming back an
        # ADDED; a delete is a MODIFIED (the deletion mark) and then the DELETED.
        assert (
            t.http.patch(
                t.path(PODS, "p"), json={"metadata": {"labels": {"w": None}}}, headers=MERGE_PATCH
            ).status_code
            == 200
        )
        assert (
            t.http.patch(
                t.path(PODS, "p"), json={"metadata": {"labels": {"w": "again"}}}, headers=MERGE_PATCH
            ).status_code
            == 200
        )
        assert t.http.delete(t.path(PODS, "p")).status_code == 200
        seen = watch(
            t,
            PODS,
            resource_version=version,
            labelSelector="w",
            until=lambda e: (
                e["type"] == "DELETED" and e["object"]["metadata"].get("labels", {}).get("w") == "again"
            ),
        )
        return [
            (
                e["type"],
                e["object"]["metadata"]["name"],
                e["object"].get("kind"),
                (e["object"]["metadata"].get("labels") or {}).get("w"),
            )
            for e in seen
        ]

    seen = compare(targets, scenario)
    assert [kind for kind, *_ in seen] == ["ADDED", "MODIFIED", "DELETED", "ADDED", "MODIFIED", "DELETED"]


def test_watch_from_a_compacted_version_is_410_gone(targets) -> None:
    def scenario(t: Target) -> list[Any]:
        create(t, pod("p"))
        version = t.http.get(t.path(PODS)).json()["metadata"]["resourceVersion"]
        for n in range(3):
            create(t, pod(f"later-{n}"))
        t.compact()
        seen = watch(t, PODS, resource_version=version, until=lambda e: e["type"] == "ERROR")
        error = seen[-1]["object"]
        return [
            [e["type"] for e in seen],
            error.get("kind"),
            error.get("status"),
            error.get("reason"),
            error.get("code"),
        ]

    assert compare(targets, scenario) == [["ERROR"], "Status", "Failure", "Expired", 410]


# ---- updates, patches, subresources ------------------------------------------------------------------


def test_update_with_a_stale_resource_version_is_a_409_conflict(targets) -> None:
    def scenario(t: Target) -> list[Any]:
        stale = create(t, pod("p"))
        fresh = t.http.patch(
            t.path(PODS, "p"), json={"metadata": {"labels": {"x": "1"}}}, headers=MERGE_PATCH
        )
        stale["metadata"]["labels"]["y"] = "2"
        conflict = t.http.put(t.path(PODS, "p"), json=stale)
        return [fresh.status_code, status_of(conflict)]

    assert compare(targets, scenario)[1]["body.reason"] == "Conflict"


def test_merge_patch_of_annotations_as_the_controller_sends_it(targets) -> None:
    def scenario(t: Target) -> list[Any]:
        created = create(t, pod("p"))
        first = t.http.patch(
            t.path(PODS, "p"), json={"metadata": {"annotations": {"a": "1", "b": "2"}}}, headers=MERGE_PATCH
        ).json()
        second = t.http.patch(
            t.path(PODS, "p"), json={"metadata": {"annotations": {"a": None}}}, headers=MERGE_PATCH
        )
        same = t.http.patch(
            t.path(PODS, "p"), json={"metadata": {"annotations": {"b": "2"}}}, headers=MERGE_PATCH
        )
        missing = t.http.patch(t.path(PODS, "nope"), json={"metadata": {}}, headers=MERGE_PATCH)
        bad_json_patch = t.http.patch(
            t.path(PODS, "p"),
            json=[{"op": "test", "path": "/metadata/name", "value": "x"}],
            headers=JSON_PATCH,
        )
        rv = [int(o["metadata"]["resourceVersion"]) for o in (created, first, second.json(), same.json())]
        return [
            first["metadata"].get("annotations"),
            second.json()["metadata"].get("annotations"),
            rv[1] > rv[0],
            rv[2] > rv[1],
            rv[3] == rv[2],  # a no-op patch writes nothing
            status_of(missing),
            bad_json_patch.status_code,
        ]

    compare(targets, scenario)


def test_status_subresource_and_binding(targets) -> None:
    def scenario(t: Target) -> list[Any]:
        create(t, pod("p"))
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "p"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"},
        }
        bound = t.http.post(t.path(PODS, "p", "binding"), json=binding)
        again = t.http.post(t.path(PODS, "p", "binding"), json=binding)
        current = t.http.get(t.path(PODS, "p")).json()
        running = {
            **current,
            "status": {
                **current["status"],
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "main",
                        "image": "alpine:3.20",
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "started": True,
                        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    }
                ],
            },
        }
        running["spec"] = {**current["spec"], "activeDeadlineSeconds": 5}  # ignored by pods/status
        status_put = t.http.put(t.path(PODS, "p", "status"), json=running)
        # A write to the pod itself cannot change status.
        after = t.http.get(t.path(PODS, "p")).json()
        after["status"]["phase"] = "Failed"
        main_put = t.http.put(t.path(PODS, "p"), json=after)
        finished = t.http.patch(
            t.path(PODS, "p", "status"), json={"status": {"phase": "Succeeded"}}, headers=MERGE_PATCH
        )
        return [
            bound.status_code,
            normalise(bound.json()),
            status_of(again),
            current["spec"].get("nodeName"),
            [c["type"] for c in current["status"].get("conditions", [])],
            status_put.status_code,
            status_put.json()["status"]["phase"],
            "activeDeadlineSeconds" in status_put.json()["spec"],
            main_put.status_code,
            main_put.json()["status"]["phase"],
            finished.status_code,
            finished.json()["status"]["phase"],
        ]

    seen = compare(targets, scenario)
    assert seen[0] == 201 and seen[3] == "node-1" and seen[-1] == "Succeeded"


def test_delete_with_preconditions_and_grace(targets) -> None:
    def scenario(t: Target) -> list[Any]:
        unbound = create(t, pod("unbound"))
        create(t, pod("bound"))
        t.http.post(
            t.path(PODS, "bound", "binding"),
            json={
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": "bound"},
                "target": {"kind": "Node", "name": "node-1"},
            },
        )
        wrong_uid = t.http.request(
            "DELETE",
            t.path(PODS, "unbound"),
            json={
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"},
            },
        )
        right_uid = t.http.request(
            "DELETE",
            t.path(PODS, "unbound"),
            json={
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"uid": unbound["metadata"]["uid"]},
            },
        )
        graceful = t.http.delete(t.path(PODS, "bound"))
        still = t.http.get(t.path(PODS, "bound"))
        return [
            status_of(wrong_uid)["code"],
            status_of(wrong_uid)["body.reason"],
            right_uid.status_code,
            right_uid.json().get("kind"),
            t.http.get(t.path(PODS, "unbound")).status_code,
            normalise(right_uid.json()["metadata"]),
            graceful.status_code,
            graceful.json()["metadata"].get("deletionGracePeriodSeconds"),
            graceful.json()["metadata"].get("generation"),
            still.status_code,
            "deletionTimestamp" in still.json()["metadata"],
        ]

    seen = compare(targets, scenario)
    assert seen[:2] == [409, "Conflict"] and seen[4] == 404 and seen[9] == 200


# ---- leases, as the leader elector uses them ---------------------------------------------------------


def _lease(name: str, holder: str) -> Json:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "leaseTransitions": 0,
            "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": "2026-01-01T00:00:00.000000Z",
        },
    }


def test_lease_create_update_and_stale_update(targets) -> None:
    def scenario(t: Target) -> list[Any]:
        created = t.http.post(t.path(LEASES), json=_lease("leader", "a"))
        duplicate = t.http.post(t.path(LEASES), json=_lease("leader", "b"))
        stale = created.json()
        renewed = {**stale, "spec": {**stale["spec"], "renewTime": "2026-01-01T00:00:05.000000Z"}}
        ok = t.http.put(t.path(LEASES, "leader"), json=renewed)
        taken = {**stale, "spec": {**stale["spec"], "holderIdentity": "b"}}
        conflict = t.http.put(t.path(LEASES, "leader"), json=taken)  # read before the renewal: 409
        blind = {**taken, "metadata": {k: v for k, v in taken["metadata"].items() if k != "resourceVersion"}}
        unconditional = t.http.put(t.path(LEASES, "leader"), json=blind)
        return [
            created.status_code,
            normalise(created.json()),
            status_of(duplicate),
            ok.status_code,
            ok.json()["spec"]["renewTime"],
            status_of(conflict),
            unconditional.status_code,
            (unconditional.json().get("spec") or {}).get("holderIdentity"),
        ]

    seen = compare(targets, scenario)
    assert seen[0] == 201 and seen[2]["code"] == 409 and seen[5]["body.reason"] == "Conflict"


def test_pod_templates_and_events_as_the_controller_reads_them(targets) -> None:
    def scenario(t: Target) -> list[Any]:
        missing = t.http.get(f"/api/v1/namespaces/{t.namespace}/podtemplates/none")
        listed = t.http.get(
            f"/api/v1/namespaces/{t.namespace}/events", params={"fieldSelector": "involvedObject.name=p"}
        )
        return [status_of(missing), listed.status_code, listed.json()["kind"], listed.json()["items"]]

    compare(targets, scenario)
