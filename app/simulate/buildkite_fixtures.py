"""pytest fixtures for the fake Buildkite, loadable as a plugin.

Enable with `pytest_plugins = ["app.simulate.buildkite_fixtures"]` (in the root `tests/conftest.py`, or
in a test module). Fixtures:

- `fake_buildkite`: a started `FakeBuildkite` (wall clock, default tokens), fresh for each test: one
  server per test session, `reset()` before every test, because starting and stopping uvicorn costs
  ~0.2 s. Set `fake_buildkite.sender = ...` freely; the reset clears it.
- `make_fake_buildkite`: a factory taking `FakeBuildkite(**kwargs)` arguments (a `ManualClock`, a
  `sender`, a smaller points budget …); every fake it made is stopped afterwards.
- `bk_http`: one `httpx.Client` for the session (building a client costs ~40 ms of TLS setup).
- `webhook_recorder`: a started `WebhookRecorder` that stores the webhooks it receives (shared per
  session like `fake_buildkite`, emptied before each test).
- `webhook_sender`: a `WebhookSender` signing with `WEBHOOK_SECRET`, posting to `webhook_recorder`
  through its own `httpx.Client`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.simulate.buildkite_server import FakeBuildkite
from app.simulate.webhook_recorder import WebhookRecorder
from app.simulate.webhook_sender import WebhookSender

WEBHOOK_SECRET = "fake-webhook-secret"


@pytest.fixture
def make_fake_buildkite() -> Iterator[Callable[..., FakeBuildkite]]:
    started: list[FakeBuildkite] = []

    def make(**kwargs: Any) -> FakeBuildkite:
        fake = FakeBuildkite(**kwargs)
        fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture(scope="session")
def shared_fake_buildkite() -> Iterator[FakeBuildkite]:
    with FakeBuildkite() as fake:
        yield fake


@pytest.fixture
def fake_buildkite(shared_fake_buildkite: FakeBuildkite) -> FakeBuildkite:
    shared_fake_buildkite.reset()
    return shared_fake_buildkite


@pytest.fixture(scope="session")
def bk_http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http:
        yield http


@pytest.fixture(scope="session")
def shared_webhook_recorder() -> Iterator[WebhookRecorder]:
    with WebhookRecorder() as recorder:
        yield recorder


@pytest.fixture
def webhook_recorder(shared_webhook_recorder: WebhookRecorder) -> WebhookRecorder:
    shared_webhook_recorder.status_code = 202
    shared_webhook_recorder.clear()
    return shared_webhook_recorder


@pytest.fixture
def webhook_sender(webhook_recorder: WebhookRecorder) -> Iterator[WebhookSender]:
    with httpx.Client(timeout=5.0) as http:
        yield WebhookSender(webhook_recorder.url, http=http, secret=WEBHOOK_SECRET)
