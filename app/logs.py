"""JSON logs with context: every line about a job carries ``job_uuid`` (and ``pod``, ``stage`` when known)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

_CONTEXT = ("job_uuid", "pod", "stage")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any context fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)[-2000:]
        return json.dumps(line, ensure_ascii=False)


def configure(*, level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; that is noise at our volume.
    logging.getLogger("httpx").setLevel(logging.WARNING)


class JobLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter that stamps ``job_uuid``/``pod``/``stage`` on every line."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra: Mapping[str, Any] = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return msg, kwargs


def job_log(logger: logging.Logger, job_uuid: str, *, stage: str, pod: str | None = None) -> JobLog:
    return JobLog(logger, {"job_uuid": job_uuid, "stage": stage, "pod": pod})
