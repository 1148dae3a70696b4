"""Parse Kubernetes resource quantities ("100m", "1.5Gi", "2e3") into exact fractions.

Input comes from pod manifests (`resources.requests` / `limits`). The grammar is apimachinery's:
a signed decimal number followed by a binary-SI, decimal-SI or exponent suffix. The apiserver rejects
anything else, so the fake does too; exact `Fraction`s let `requests <= limits` compare without float
rounding surprises.
"""

from __future__ import annotations

import re
from fractions import Fraction

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(\d+\.?\d*|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}

QUANTITY_MESSAGE = "must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


def parse_quantity(value: str | int | float) -> Fraction:
    """Return the exact value of a quantity; raise ValueError with the apiserver's message if malformed."""
    if isinstance(value, bool):
        raise ValueError(QUANTITY_MESSAGE)
    if isinstance(value, int | float):
        return Fraction(str(value))
    match = _QUANTITY.match(value.strip()) if isinstance(value, str) and len(value) < 64 else None
    if not match:
        raise ValueError(QUANTITY_MESSAGE)
    number = Fraction(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * Fraction(10) ** int(suffix[1:])
