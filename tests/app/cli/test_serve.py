"""``serve`` refuses to start without what it cannot work without, saying why (nothing is started)."""

from __future__ import annotations

from typing import Any

import pytest

from app.cli import serve
from app.config import OPTIONS

BASE = {"token": "bkua_x", "org": "acme", "webhook-secret": "s3cret"}


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    for option in OPTIONS:  # nothing from the test machine's environment
        for name in getattr(option, "env_names", (option.env_name,)):
            monkeypatch.delenv(name, raising=False)
    calls: list[Any] = []
    monkeypatch.setattr(serve.logs, "configure", lambda **_: None)
    monkeypatch.setattr(serve, "create_app", lambda settings: settings)
    monkeypatch.setattr(serve.uvicorn, "run", lambda app, **_: calls.append(app))
    return calls


def test_serve_refuses_to_start_without_an_agent_token_and_says_why(
    started: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve.run(flags=BASE, config_file=None) == 2
    assert started == []
    error = capsys.readouterr().err
    assert "--agent-token (BUILDKITE_AGENT_TOKEN) is required" in error
    assert "failed in Buildkite" in error and "new pod again and again" in error


def test_serve_starts_with_an_agent_token(started: list[Any]) -> None:
    assert serve.run(flags={**BASE, "agent-token": "bkct_x"}, config_file=None) == 0
    [settings] = started
    assert settings.buildkite.agent_token.get_secret_value() == "bkct_x"
