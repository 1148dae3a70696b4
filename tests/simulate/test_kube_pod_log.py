"""`GET pods/{name}/log` on the fake apiserver (the simulated kubelet's scripted output), read through the
official client and through the controller's own gateway (`KubeAPI.read_pod_log`), errors included."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.errors import Forbidden, Invalid, KubeUnavailable, NotFound
from app.simulate.kube_api import FakeKubeAPI
from app.simulate.kubelet import SimulatedKubelet
from app.simulate.kubelet_script import ContainerScript, ScriptError, parse_container_annotation
from app.simulate.pytest_plugin import make_pod
from tests.app.kube_fixtures import gateway

SCRIPT = "kubelet.simulate/container.main"


def ran(fake_kube: FakeKubeAPI, kubelet: SimulatedKubelet, name: str, script: str, **spec: Any) -> None:
    """Create the pod with ``script`` for container ``main`` and step the node until it has ended."""
    pod = make_pod(name, **spec)
    pod["metadata"]["annotations"] = {SCRIPT: script}  # type: ignore[index]
    fake_kube.create("pods", pod)
    kubelet.step_until(lambda: (fake_kube.get("pods", name) or {}).get("status", {}).get("phase") == "Failed")


def read(url: str, call: Callable[[Any], Awaitable[bytes]]) -> bytes:
    async def main() -> bytes:
        kube = gateway(url, namespace="default")
        try:
            return await call(kube)
        finally:
            await kube.close()

    return asyncio.run(main())


def test_log_and_say_tokens_script_the_output() -> None:
    script = parse_container_annotation("log=2 say=token%3D%20s3cr3t say=%1b%5b31m", ContainerScript())
    assert script.output("c") == b"c line 1 of 2\nc line 2 of 2\ntoken= s3cr3t\n\x1b[31m\n"
    with pytest.raises(ScriptError):
        parse_container_annotation("log=many", ContainerScript())


def test_the_official_client_reads_the_tail_within_limit_bytes(fake_kube, kubelet, core_v1) -> None:
    ran(fake_kube, kubelet, "p", "log=200 say=bye exit=1")
    whole = core_v1.read_namespaced_pod_log("p", "default", container="main")
    assert whole.startswith("main line 1 of 200\n") and whole.endswith("main line 200 of 200\nbye\n")
    tail = core_v1.read_namespaced_pod_log("p", "default", container="main", tail_lines=3)
    assert tail == "main line 199 of 200\nmain line 200 of 200\nbye\n"
    # limitBytes counts from the start of the tail, so the newest bytes are the ones cut.
    cut = core_v1.read_namespaced_pod_log("p", "default", container="main", tail_lines=3, limit_bytes=10)
    assert cut == "main line "


def test_the_gateway_reads_bytes_and_translates_every_refusal(fake_kube, kubelet) -> None:
    ran(fake_kube, kubelet, "p", "log=5 exit=1")
    fake_kube.create("pods", make_pod("waits", image="registry.example/does-not-exist:1"))
    kubelet.step()
    url = fake_kube.url

    def log_of(pod: str, container: str = "main", **kw: Any) -> Callable[[Any], Awaitable[bytes]]:
        return lambda kube: kube.read_pod_log(
            pod, container, tail_lines=kw.pop("tail", 2), limit_bytes=1000, **kw
        )

    assert read(url, log_of("p")) == b"main line 4 of 5\nmain line 5 of 5\n"
    for call, error, said in [
        (log_of("gone"), NotFound, 'pods "gone" not found'),
        (log_of("p", "nope"), Invalid, "container nope is not valid for pod p"),
        (log_of("p", previous=True), Invalid, 'previous terminated container "main" in pod "p" not found'),
        (log_of("waits"), Invalid, 'container "main" in pod "waits" is waiting to start'),
    ]:
        with pytest.raises(error) as caught:
            read(url, call)
        assert said in caught.value.message
    fake_kube.inject("get", "pods/log", status=403)
    with pytest.raises(Forbidden):
        read(url, log_of("p"))
    fake_kube.inject("get", "pods/log", status=503)
    with pytest.raises(KubeUnavailable):
        read(url, log_of("p"))


def test_a_hung_log_read_times_out_as_unavailable(fake_kube, kubelet) -> None:
    ran(fake_kube, kubelet, "p", "log=5 exit=1")
    fake_kube.inject("get", "pods/log", delay=5)
    started = time.monotonic()
    with pytest.raises(KubeUnavailable):
        read(
            fake_kube.url,
            lambda kube: kube.read_pod_log("p", "main", tail_lines=5, limit_bytes=99, timeout_seconds=0.3),
        )
    assert time.monotonic() - started < 3


def test_the_gateway_never_holds_more_than_limit_bytes(fake_kube, kubelet) -> None:
    ran(fake_kube, kubelet, "p", "log=1000 exit=1")
    got = read(fake_kube.url, lambda kube: kube.read_pod_log("p", "main", tail_lines=1000, limit_bytes=100))
    assert len(got) == 100 and got.startswith(b"main line 1 of 1000\n")


def test_pods_log_is_in_discovery_with_get_only_and_other_methods_are_405(fake_kube) -> None:
    resources = httpx.get(f"{fake_kube.url}/api/v1").json()["resources"]
    (entry,) = [r for r in resources if r["name"] == "pods/log"]
    assert entry["verbs"] == ["get"]
    fake_kube.create("pods", make_pod("p"))
    assert httpx.delete(f"{fake_kube.url}/api/v1/namespaces/default/pods/p/log").status_code == 405
