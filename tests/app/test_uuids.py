"""Job UUIDs have one spelling inside the controller; the fast path agrees with ``uuid.UUID``."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.buildkite.uuids import canonical, is_hyphenated
from app.jobs import is_uuid, normalise

UUID = "0b9e2a6c-8a3e-4c52-9d54-0a4c2f0e2f1d"


@given(st.uuids(), st.sampled_from([str, lambda u: str(u).upper(), lambda u: u.hex, lambda u: u.urn]))
def test_canonical_is_what_uuid_uuid_says(value: uuid.UUID, spell: object) -> None:
    assert canonical(spell(value)) == str(value)  # type: ignore[operator]


@given(st.text(max_size=40))
def test_canonical_refuses_what_uuid_uuid_refuses(text: str) -> None:
    try:
        expected: str | None = str(uuid.UUID(text))
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            canonical(text)
    else:
        assert canonical(text) == expected


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        (UUID, True),
        (UUID.upper(), True),
        ("{" + UUID + "}", False),
        (UUID.replace("-", ""), False),
        (UUID + "\n", False),
        ("urn:uuid:" + UUID, False),
        ("", False),
    ],
)
def test_a_job_key_is_a_hyphenated_uuid(key: str, valid: bool) -> None:
    assert is_hyphenated(key) is valid
    assert is_uuid(normalise(key)) is (valid or key == UUID + "\n")  # normalise strips whitespace
