"""End-to-end harness: a fake cluster, a fake Buildkite, and the real controller served by uvicorn.

The controller reaches the fake apiserver through a kubeconfig file and the official client, and the
fake Buildkite through httpx, exactly as in production; webhooks arrive over HTTP, signed.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from app.config import load
from app.main import create_app
from app.simulate.buildkite_server import FakeBuildkite
from app.simulate.kube_api import FakeKubeAPI
from app.simulate.webhook_sender import WebhookSender
from tests.support import wait_until

WEBHOOK_SECRET = "flow-test-webhook-secret"
NAMESPACE = "buildkite"


def write_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                "contexts": [
                    {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}
                ],
                "current-context": "fake",
            }
        )
    )
    return path


class ControllerServer:
    """The controller app under uvicorn (lifespan on) in a daemon thread, on a loopback port."""

    def __init__(self, app: Any) -> None:
        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Without TCP_NODELAY, uvicorn's separate header and body writes meet Nagle + delayed ACK: +40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        self._socket = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        )
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)

    def start(self) -> None:
        self._thread.start()
        wait_until(lambda: self._server.started, timeout=10, what="controller started")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self._socket.close()


class Stack:
    def __init__(
        self,
        kube: FakeKubeAPI,
        buildkite: FakeBuildkite,
        controller: ControllerServer,
        http: httpx.Client,
        sender: WebhookSender,
    ) -> None:
        self.kube = kube
        self.buildkite = buildkite
        self.controller = controller
        self.http = http
        self.sender = sender

    def pods(self) -> list[dict[str, Any]]:
        return self.kube.list("pods", NAMESPACE)

    def pod_for(self, uuid: str) -> dict[str, Any] | None:
        return self.kube.get("pods", f"buildkite-{uuid}", NAMESPACE)

    def scheduled(self, uuid: str) -> Any:
        """Send the job.scheduled webhook for a job of the fake Buildkite."""
        return self.sender.send_job_event("job.scheduled", self.buildkite.job(uuid))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(self.controller.url + path, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(self.controller.url + path)


@contextmanager
def running_stack(
    tmp_path: Path,
    *,
    flags: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    buildkite: FakeBuildkite | None = None,
) -> Iterator[Stack]:
    """Start everything; the controller's settings come from ``load`` like ``serve`` would build them."""
    with FakeKubeAPI() as kube, httpx.Client(timeout=10) as http:
        fake_bk = buildkite or FakeBuildkite()
        if buildkite is None:
            fake_bk.start()
        try:
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
            base = {
                "token": fake_bk.api_token,
                "org": fake_bk.org.slug,
                "agent-token": fake_bk.agent_token,
                "graphql-endpoint": fake_bk.graphql_url,
                "agent-endpoint": fake_bk.agent_endpoint,
                "webhook-secret": WEBHOOK_SECRET,
                "kubeconfig": str(kubeconfig),
                "queue": "kubernetes",
                "namespace": NAMESPACE,
                "log-format": "text",
            }
            settings = load(flags={**base, **(flags or {})}, env=env or {}).settings
            server = ControllerServer(create_app(settings))
            server.start()
            try:
                sender = WebhookSender(server.url + "/webhooks/buildkite", http=http, secret=WEBHOOK_SECRET)
                stack = Stack(kube, fake_bk, server, http, sender)
                wait_until(
                    lambda: stack.get("/readyz").status_code == 200, timeout=10, what="controller ready"
                )
                # The boot sweep comes once leadership is won; a job a test adds before it has ended could be
                # found by that sweep first, and the test's own webhook answered "duplicate".
                controller = server.app.state.controller
                wait_until(lambda: controller.sweeper.last is not None, timeout=10, what="the boot sweep")
                yield stack
            finally:
                server.stop()
        finally:
            if buildkite is None:
                fake_bk.stop()
