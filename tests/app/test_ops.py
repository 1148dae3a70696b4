"""Ops endpoints: the bearer token on writes, and which port serves which path.

Input: the real ops router and the real ``create_app`` routes, driven in-process through
``httpx.ASGITransport`` with a chosen client address (a job pod is "10.0.3.7", ``kubectl port-forward`` is
loopback). The controller behind the router is a stand-in holding real ``Settings`` and counting sweeps.
tests/deploy/test_serve_ports.py runs the same split over real sockets in the ``serve`` command.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.main import create_app
from app.ops import PUBLIC_PATHS, ops_port_app, public_port_app, router
from app.settings import ServerSettings, Settings
from app.webhook import PATH as WEBHOOK_PATH

TOKEN = "0p5-t0ken-of-the-secret"
JOB_POD = ("10.0.3.7", 40000)
LOOPBACK = ("127.0.0.1", 40000)


@dataclass
class Summary:
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"queued": 0, "error": self.error}


@dataclass
class Sweeper:
    calls: list[str] = field(default_factory=list)

    async def sweep(self, *, trigger: str, wait_seconds: float) -> Summary:
        self.calls.append(trigger)
        return Summary()


def ops_app(token: str | None) -> tuple[FastAPI, Sweeper]:
    app = FastAPI()
    app.include_router(router())
    sweeper = Sweeper()
    settings = Settings(server=ServerSettings(ops_token=SecretStr(token) if token else None))
    app.state.controller = SimpleNamespace(settings=settings, sweeper=sweeper)
    return app, sweeper


def post(app: Any, *, client: tuple[str, int] = JOB_POD, headers: Any = None) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://controller") as http:
            return await http.post("/reconcile", headers=headers)

    return asyncio.run(call())


def test_a_job_pod_without_the_token_gets_401_and_no_sweep() -> None:
    app, sweeper = ops_app(TOKEN)
    response = post(app)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "ops token" in response.json()["detail"]
    assert sweeper.calls == []


def test_the_right_bearer_token_sweeps() -> None:
    app, sweeper = ops_app(TOKEN)
    assert post(app, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert post(app, headers={"authorization": f"bearer  {TOKEN} "}).status_code == 200
    assert sweeper.calls == ["api", "api"]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": TOKEN}, id="no-scheme"),
        pytest.param({"Authorization": "Bearer"}, id="scheme-only"),
        pytest.param({"Authorization": "Bearer "}, id="empty-token"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="basic-scheme"),
        pytest.param({"Authorization": f"Bearer {TOKEN[:-1]}"}, id="prefix-of-the-token"),
        pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="token-plus-one"),
        pytest.param({"Authorization": f"Bearer {TOKEN.upper()}"}, id="other-case"),
        pytest.param({"Authorization": "Bearer " + "A" * 100_000}, id="huge"),
        pytest.param([("Authorization", b"Bearer \xff\xfe\x00t")], id="non-ascii-and-nul"),
        pytest.param(
            [("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {TOKEN}")], id="two-headers"
        ),
        pytest.param({"X-Ops-Token": TOKEN}, id="other-header"),
        pytest.param({"Cookie": f"token={TOKEN}"}, id="cookie"),
        pytest.param({"X-Forwarded-For": "127.0.0.1"}, id="claims-loopback"),
    ],
)
def test_hostile_or_wrong_authorization_is_a_401_never_a_5xx(headers: Any) -> None:
    app, sweeper = ops_app(TOKEN)
    assert post(app, headers=headers).status_code == 401
    assert sweeper.calls == []


def test_with_a_token_configured_loopback_needs_it_too() -> None:
    app, _ = ops_app(TOKEN)
    assert post(app, client=LOOPBACK).status_code == 401


def test_without_a_token_only_loopback_may_reconcile() -> None:
    app, sweeper = ops_app(None)
    refused = post(app)
    assert refused.status_code == 403 and "--ops-token" in refused.json()["detail"]
    assert post(app, client=("::1", 1)).status_code == 200
    assert post(app, client=LOOPBACK).status_code == 200
    assert sweeper.calls == ["api", "api"]


def test_a_refusal_is_logged_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = ops_app(TOKEN)
    caplog.set_level(logging.DEBUG)
    post(app, headers={"Authorization": f"Bearer {TOKEN}-guess"})
    assert "refused" in caplog.text and "10.0.3.7" in caplog.text
    assert TOKEN not in caplog.text


def test_reads_need_no_token() -> None:
    app, _ = ops_app(TOKEN)
    app.state.controller.is_ready = lambda: {"leader": True}
    app.state.controller.readiness_detail = lambda: {}

    async def call() -> list[int]:
        transport = httpx.ASGITransport(app=app, client=JOB_POD)
        async with httpx.AsyncClient(transport=transport, base_url="http://controller") as http:
            return [(await http.get(path)).status_code for path in ("/healthz", "/readyz")]

    assert asyncio.run(call()) == [200, 200]


# --- which port serves what ---------------------------------------------------------------------------


def served_paths() -> set[str]:
    return set(create_app(Settings()).openapi()["paths"])


def test_the_webhook_the_app_serves_is_a_public_path() -> None:
    # A renamed webhook path would otherwise vanish from the main port without a failing test.
    # (The webhook is served before FastAPI's routing, so it is not among the OpenAPI paths.)
    assert WEBHOOK_PATH in PUBLIC_PATHS
    assert not any(path.startswith("/webhooks/") for path in served_paths())


def status(app: Any, method: str, path: str) -> int:
    async def call() -> int:
        transport = httpx.ASGITransport(app=app, client=JOB_POD)
        async with httpx.AsyncClient(transport=transport, base_url="http://controller") as http:
            return (await http.request(method, path, content=b"{}")).status_code

    return asyncio.run(call())


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/healthz", "/reconcile", "/openapi.json", "/"])
def test_the_main_port_serves_no_ops_path(path: str) -> None:
    # The app behind is not started: anything that reached it would fail, not 404.
    main = public_port_app(create_app(Settings()))
    assert status(main, "GET", path) == 404
    assert status(main, "POST", path) == 404


@pytest.mark.parametrize(
    "path",
    [*sorted(PUBLIC_PATHS), *(p + "/" for p in sorted(PUBLIC_PATHS)), "/webhooks/buildkite//"],
)
def test_the_ops_port_serves_neither_the_webhook_nor_the_relay(path: str) -> None:
    ops = ops_port_app(create_app(Settings()))
    assert status(ops, "POST", path) == 404


async def answers_202(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_every_route_of_the_app_is_served_on_exactly_one_port() -> None:
    main, ops = public_port_app(answers_202), ops_port_app(answers_202)
    for path in served_paths():
        concrete = path.replace("{uuid}", "0190b5a4-5c5e-4b8e-9d3e-1f2a3b4c5d6e").replace("{name}", "x.css")
        on_main, on_ops = status(main, "POST", concrete) == 202, status(ops, "POST", concrete) == 202
        assert on_main != on_ops, path
        assert on_main == (path in PUBLIC_PATHS), path
