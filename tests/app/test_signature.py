"""Webhook signature verification: a table of named cases, hostile headers, and a property test."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from app.buildkite.signature import sign, verify
from app.errors import WebhookRejected

SECRET = "s3cr3t-webhook-key"
TOKEN = "plain-webhook-token"
NOW = 1_700_000_000
BODY = b'{"event":"job.scheduled","job":{"id":"0190c5e8-0000-4000-8000-000000000001"}}'


def signed(body: bytes = BODY, *, secret: str = SECRET, timestamp: int = NOW) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Buildkite-Signature": f"timestamp={timestamp},signature={digest}"}


def check(headers: dict[str, str], body: bytes = BODY, **overrides: object) -> None:
    options: dict[str, object] = {"secret": SECRET, "token": None, "now": float(NOW)}
    options.update(overrides)
    verify(headers, body, **options)  # type: ignore[arg-type]


def test_sign_matches_hmac_of_timestamp_dot_body() -> None:
    assert {"X-Buildkite-Signature": sign(BODY, secret=SECRET, timestamp=NOW)} == signed()


GOOD_SIGNATURE = signed()["X-Buildkite-Signature"]
GOOD_HEX = GOOD_SIGNATURE.split("signature=")[1]

ACCEPTED = {
    "valid signature": signed(),
    "lower-case header name": {"x-buildkite-signature": GOOD_SIGNATURE},
    "spaces around parts": {"X-Buildkite-Signature": f" timestamp = {NOW} , signature = {GOOD_HEX} "},
    "signature before timestamp": {"X-Buildkite-Signature": f"signature={GOOD_HEX},timestamp={NOW}"},
    "upper-case hex": {"X-Buildkite-Signature": f"timestamp={NOW},signature={GOOD_HEX.upper()}"},
    "unknown extra part": {"X-Buildkite-Signature": f"timestamp={NOW},v=2,signature={GOOD_HEX}"},
    "empty parts": {"X-Buildkite-Signature": f",timestamp={NOW},,signature={GOOD_HEX},"},
    "299 s old": signed(timestamp=NOW - 299),
    "299 s ahead": signed(timestamp=NOW + 299),
}


@pytest.mark.parametrize("headers", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_authentic_signatures_are_accepted(headers: dict[str, str]) -> None:
    check(headers)


REJECTED = {
    "wrong secret": (signed(secret="other"), "does not match"),
    "body changed": ({**signed(body=b"{}")}, "does not match"),
    "bad hex": ({"X-Buildkite-Signature": f"timestamp={NOW},signature={'zz' * 32}"}, "64 hex"),
    "short hex": ({"X-Buildkite-Signature": f"timestamp={NOW},signature=abcd"}, "64 hex"),
    "stale by 301 s": (signed(timestamp=NOW - 301), "old"),
    "future by 301 s": (signed(timestamp=NOW + 301), "in the future"),
    "missing timestamp": ({"X-Buildkite-Signature": f"signature={GOOD_HEX}"}, "no timestamp"),
    "missing signature": ({"X-Buildkite-Signature": f"timestamp={NOW}"}, "no signature"),
    "empty header": ({"X-Buildkite-Signature": ""}, "no timestamp"),
    "timestamp not a number": (
        {"X-Buildkite-Signature": f"timestamp=soon,signature={GOOD_HEX}"},
        "whole number",
    ),
    "negative timestamp": ({"X-Buildkite-Signature": f"timestamp=-5,signature={GOOD_HEX}"}, "whole number"),
    "unicode digits": ({"X-Buildkite-Signature": f"timestamp=١٢٣,signature={GOOD_HEX}"}, "whole number"),
    "duplicated timestamp": (
        {"X-Buildkite-Signature": f"timestamp=1,timestamp={NOW},signature={GOOD_HEX}"},
        "repeats timestamp",
    ),
    "duplicated signature": (
        {"X-Buildkite-Signature": f"timestamp={NOW},signature={GOOD_HEX},signature={'0' * 64}"},
        "repeats signature",
    ),
    "header repeated with another case": (
        {"X-Buildkite-Signature": GOOD_SIGNATURE, "x-buildkite-signature": GOOD_SIGNATURE},
        "repeated",
    ),
    "hostile huge header": ({"X-Buildkite-Signature": "timestamp=1," * 100_000}, "longer than"),
    "no header at all": ({}, "missing X-Buildkite-Signature"),
    "token sent where a signature is expected": ({"X-Buildkite-Token": SECRET}, "signature mode expected"),
}


@pytest.mark.parametrize(("headers", "reason"), REJECTED.values(), ids=REJECTED.keys())
def test_bad_signatures_are_rejected_with_401_and_a_reason(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(WebhookRejected) as caught:
        check(headers)
    assert caught.value.status == 401
    assert reason in caught.value.reason
    assert SECRET not in caught.value.reason
    assert GOOD_HEX not in caught.value.reason


def test_skew_window_is_configurable() -> None:
    check(signed(timestamp=NOW - 30), max_skew_seconds=60)
    with pytest.raises(WebhookRejected, match="old"):
        check(signed(timestamp=NOW - 61), max_skew_seconds=60)


def test_token_mode_accepts_the_configured_token() -> None:
    check({"X-Buildkite-Token": TOKEN}, secret=None, token=TOKEN)
    check({"x-buildkite-token": f" {TOKEN} "}, secret=None, token=TOKEN)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-Buildkite-Token": "wrong"}, "does not match"),
        ({"X-Buildkite-Token": "tökén with ünicode"}, "does not match"),
        ({"X-Buildkite-Token": ""}, "does not match"),
        ({}, "missing X-Buildkite-Token"),
        (signed(), "token mode expected"),
    ],
    ids=["wrong token", "non-ascii token", "empty token", "no header", "signature sent instead"],
)
def test_token_mode_rejects_anything_but_the_token(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(WebhookRejected) as caught:
        check(headers, secret=None, token=TOKEN)
    assert caught.value.status == 401
    assert reason in caught.value.reason
    assert TOKEN not in caught.value.reason


def test_with_both_configured_either_proof_is_accepted() -> None:
    check(signed(), token=TOKEN)
    check({"X-Buildkite-Token": TOKEN}, token=TOKEN)


def test_with_both_configured_a_bad_signature_is_not_rescued_by_a_good_token() -> None:
    with pytest.raises(WebhookRejected, match="does not match"):
        check({**signed(secret="other"), "X-Buildkite-Token": TOKEN}, token=TOKEN)


def test_unsigned_requests_are_accepted_only_when_allowed_and_nothing_is_configured() -> None:
    check({}, secret=None, token=None, allow_unsigned=True)
    with pytest.raises(WebhookRejected, match="unsigned webhooks are refused"):
        check({}, secret=None, token=None)
    with pytest.raises(WebhookRejected, match="missing X-Buildkite-Signature"):
        check({}, allow_unsigned=True)


header_names = st.sampled_from(
    ["X-Buildkite-Signature", "x-buildkite-signature", "X-Buildkite-Token", "Other"]
)
header_values = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda t, s: f"timestamp={t},signature={s}",
        st.one_of(st.integers(-(10**15), 10**15).map(str), st.text(max_size=20)),
        st.one_of(st.text(alphabet="0123456789abcdefABCDEF", min_size=60, max_size=68), st.text(max_size=70)),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(header_names, header_values, max_size=4),
    body=st.binary(max_size=512),
    secret=st.one_of(st.none(), st.text(max_size=40).map(lambda text: "sekret:" + text)),
    token=st.one_of(st.none(), st.text(max_size=40).map(lambda text: "tokken:" + text)),
    allow_unsigned=st.booleans(),
)
def test_random_headers_and_bodies_never_raise_anything_but_webhook_rejected(
    headers: dict[str, str], body: bytes, secret: str | None, token: str | None, allow_unsigned: bool
) -> None:
    try:
        verify(headers, body, secret=secret, token=token, now=float(NOW), allow_unsigned=allow_unsigned)
    except WebhookRejected as rejected:
        assert rejected.status == 401
        assert "sekret:" not in rejected.reason
        assert "tokken:" not in rejected.reason


def test_starlette_request_headers_work_and_a_repeated_header_is_refused() -> None:
    value = GOOD_SIGNATURE.encode()
    check(Headers(raw=[(b"x-buildkite-signature", value)]))
    with pytest.raises(WebhookRejected, match="repeated"):
        check(Headers(raw=[(b"x-buildkite-signature", value), (b"x-buildkite-signature", value)]))
