"""Durations as agent-stack-k8s writes them: Go strings (``90s``, ``15m``, ``1h30m``) or plain seconds."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a number of seconds, or a Go duration string. Raises ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration such as 30s or 15m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration such as 30s or 15m")
    text = value.strip()
    try:
        return parse_duration(float(text))
    except ValueError:
        pass
    if text == "0":
        return 0.0
    position, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration such as 30s or 15m")
    return total
