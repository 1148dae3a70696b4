"""Logs with context: every line about a job carries ``job_uuid`` (and ``pod``, ``stage`` when known).

Formats: ``json`` (one object per line), ``logfmt`` (``key=value`` pairs, agent-stack-k8s' default, so
its users' log queries keep working) and ``text`` (for a terminal).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

_CONTEXT = ("job_uuid", "pod", "stage")


def _fields(formatter: logging.Formatter, record: logging.LogRecord, *, message_key: str) -> dict[str, Any]:
    """time, level, logger, message, the context fields present, and a cut-short traceback."""
    line: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        message_key: record.getMessage(),
    }
    for key in _CONTEXT:
        value = getattr(record, key, None)
        if value is not None:
            line[key] = value
    if record.exc_info:
        line["error"] = formatter.formatException(record.exc_info)[-2000:]
    return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any context fields."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(self, record, message_key="message"), ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    """One ``key=value`` line (the logfmt convention: ``msg``; values with spaces or quotes quoted)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(self, record, message_key="msg")
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(ch in text for ch in ' ="\\') and text.isprintable():
        return text
    # json.dumps quotes and escapes (newlines, quotes, control characters) the way logfmt parsers read.
    return json.dumps(text, ensure_ascii=False)


FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "logfmt": LogfmtFormatter}


def configure(*, level: str = "info", fmt: str = "json") -> None:
    """Send every log line to stderr in ``fmt`` at ``level`` (``warn`` is ``warning``, any case)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = FORMATTERS.get(fmt)
    if formatter is not None:
        handler.setFormatter(formatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    name = level.strip().upper()
    root.setLevel("WARNING" if name == "WARN" else name)
    # httpx logs every request URL at INFO; that is noise at our volume.
    logging.getLogger("httpx").setLevel(logging.WARNING)


class JobLog(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that stamps ``job_uuid``/``pod``/``stage`` on every line."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra: Mapping[str, Any] = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return msg, kwargs


def job_log(logger: logging.Logger, job_uuid: str, *, stage: str, pod: str | None = None) -> JobLog:
    return JobLog(logger, {"job_uuid": job_uuid, "stage": stage, "pod": pod})
