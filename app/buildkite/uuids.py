"""Job UUIDs: the one spelling the controller uses (lower case, hyphenated), and the check for it.

Buildkite sends that spelling, in any case; ``canonical`` takes it as is, without building a
``uuid.UUID`` per job on the webhook and confirm paths, and still accepts the other forms
``uuid.UUID`` reads (braces, ``urn:uuid:``, no hyphens).
"""

from __future__ import annotations

import re
import uuid

_HYPHENATED = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def canonical(value: str) -> str:
    """``value`` as a lower-case hyphenated UUID; ``ValueError`` when it is not a UUID at all."""
    if _HYPHENATED.fullmatch(value):
        return value.lower()
    return str(uuid.UUID(value))


def is_hyphenated(value: str) -> bool:
    """True for a UUID in the hyphenated form (any case): what a job key may be, once lower-cased."""
    return _HYPHENATED.fullmatch(value) is not None
