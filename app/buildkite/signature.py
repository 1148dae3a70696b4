"""Verify that a webhook request really comes from Buildkite (pure: headers and body in, verdict out).

Input: the request headers and raw body bytes as received by the webhook route, the configured
webhook secret (HMAC mode) and/or token (plain-token mode), and the current time.

Buildkite signs ``f"{timestamp}." + body`` with HMAC-SHA256 keyed by the webhook token and sends
``X-Buildkite-Signature: timestamp=<unix seconds>,signature=<lowercase hex>``; in token mode it sends
the token itself as ``X-Buildkite-Token`` (reference/buildkite-api.md §1.3). ``verify`` returns None
when the request is authentic and raises ``WebhookRejected(401, reason)`` otherwise — for any header
value at all, however malformed. Reasons never contain the secret, the token or the expected signature.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

from app.errors import WebhookRejected

SIGNATURE_HEADER = "x-buildkite-signature"
TOKEN_HEADER = "x-buildkite-token"

# A real header is ~90 characters; anything far longer is garbage or an attack, so stop reading early.
MAX_HEADER_CHARS = 1024
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def verify(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    token: str | None,
    now: float,
    max_skew_seconds: int = 300,
    allow_unsigned: bool = False,
) -> None:
    """Accept the request or raise ``WebhookRejected(401, reason)``.

    A configured ``secret`` checks the signature header; a configured ``token`` checks the token
    header. ``allow_unsigned`` only matters when neither is configured (local development).
    """
    signature = _single_header(headers, SIGNATURE_HEADER)
    sent_token = _single_header(headers, TOKEN_HEADER)
    if secret and signature is not None:
        _check_signature(signature, body, secret=secret, now=now, max_skew_seconds=max_skew_seconds)
    elif token and sent_token is not None:
        _check_token(sent_token, token)
    elif secret or token:
        raise _reject(_missing_reason(secret=secret, token=token, signature=signature, sent_token=sent_token))
    elif not allow_unsigned:
        raise _reject("no webhook secret or token is configured, and unsigned webhooks are refused")


def sign(body: bytes, *, secret: str, timestamp: int) -> str:
    """The ``X-Buildkite-Signature`` value Buildkite would send for ``body`` at ``timestamp``."""
    return f"timestamp={timestamp},signature={_hmac_hex(secret, str(timestamp), body)}"


def _check_signature(header: str, body: bytes, *, secret: str, now: float, max_skew_seconds: int) -> None:
    parts = _parse_signature_header(header)
    timestamp = parts.get("timestamp")
    signature = parts.get("signature")
    if timestamp is None or signature is None:
        missing = "timestamp" if timestamp is None else "signature"
        raise _reject(f"X-Buildkite-Signature has no {missing}= part")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise _reject("X-Buildkite-Signature timestamp is not a whole number of seconds")
    if not _HEX_SHA256.fullmatch(signature):
        raise _reject("X-Buildkite-Signature signature is not 64 hex digits")
    skew = now - int(timestamp)
    if abs(skew) > max_skew_seconds:
        direction = "old" if skew > 0 else "in the future"
        raise _reject(
            f"X-Buildkite-Signature timestamp is {abs(skew):.0f} s {direction} "
            f"(allowed: {max_skew_seconds} s); check the clocks, or this is a replay"
        )
    expected = _hmac_hex(secret, timestamp, body)
    if not hmac.compare_digest(expected, signature.lower()):
        raise _reject("X-Buildkite-Signature does not match the body; check the webhook secret")


def _parse_signature_header(header: str) -> dict[str, str]:
    """``"timestamp=1, signature=ab"`` → ``{"timestamp": "1", "signature": "ab"}``.

    Tolerant of spaces, empty parts, unknown keys and order; a repeated key is refused because
    picking one of two values would let an attacker choose which one we check.
    """
    parts: dict[str, str] = {}
    for part in header.split(","):
        key, equals, value = part.partition("=")
        key = key.strip().lower()
        if not equals or key not in ("timestamp", "signature"):
            continue
        if key in parts:
            raise _reject(f"X-Buildkite-Signature repeats {key}=")
        parts[key] = value.strip()
    return parts


def _check_token(sent: str, token: str) -> None:
    # Compare bytes: compare_digest refuses non-ASCII str, and a hostile header may carry anything.
    if not hmac.compare_digest(_bytes(sent.strip()), _bytes(token)):
        raise _reject("X-Buildkite-Token does not match the configured webhook token")


def _missing_reason(
    *, secret: str | None, token: str | None, signature: str | None, sent_token: str | None
) -> str:
    if signature is not None:
        return "X-Buildkite-Signature sent, but only a webhook token is configured (token mode expected)"
    if sent_token is not None:
        return "X-Buildkite-Token sent, but only a webhook secret is configured (signature mode expected)"
    wanted = " or ".join(
        name
        for name, configured in (("X-Buildkite-Signature", secret), ("X-Buildkite-Token", token))
        if configured
    )
    return f"missing {wanted} header"


def _single_header(headers: Mapping[str, str], name: str) -> str | None:
    """The header's value, case-insensitively; refused when repeated or absurdly long."""
    values = [value for key, value in headers.items() if isinstance(key, str) and key.lower() == name]
    if not values:
        return None
    if len(values) > 1:
        raise _reject(f"header {name} is repeated")
    value = values[0]
    if not isinstance(value, str):
        raise _reject(f"header {name} is not text")
    if len(value) > MAX_HEADER_CHARS:
        raise _reject(f"header {name} is longer than {MAX_HEADER_CHARS} characters")
    return value


def _hmac_hex(secret: str, timestamp: str, body: bytes) -> str:
    # hmac.digest is OpenSSL's one-shot HMAC: no Python HMAC object per request (hmac.new's cost).
    return hmac.digest(_bytes(secret), _bytes(timestamp) + b"." + body, "sha256").hex()


def _bytes(text: str) -> bytes:
    # surrogatepass: a lone surrogate cannot come over HTTP, but must not crash verification either.
    return text.encode("utf-8", "surrogatepass")


def _reject(reason: str) -> WebhookRejected:
    return WebhookRejected(401, reason)
