"""Label and field selectors, parsed from list/watch query strings and matched against stored objects.

Label selectors follow apimachinery's grammar: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
`k` (exists) and `!k` (does not exist), joined by commas. Field selectors support `=`, `==`, `!=` on the
fields each resource registers with the real apiserver; any other field is a 400, as there.
A selector that does not parse raises `ApiError(400)` carrying the apiserver's wording.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.simulate.kube_status import ApiError, bad_request

_KEY_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_KEY_NAME}$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_SET_OP = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)$")
_EQ_OP = re.compile(r"^(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^=!\s]*)$")

# Fields each resource lets clients select on (besides metadata.name / metadata.namespace).
FIELD_LABELS: dict[str, frozenset[str]] = {
    "pods": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "events": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    "secrets": frozenset({"type"}),
}


@dataclass(frozen=True)
class Requirement:
    """One clause of a selector: `key op values`."""

    key: str
    op: str  # one of: =, !=, in, notin, exists, !exists
    values: tuple[str, ...] = ()

    def matches(self, present: bool, value: str) -> bool:
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        return present if self.op == "exists" else not present


Selector = tuple[Requirement, ...]


def _split_clauses(text: str) -> list[str]:
    """Split on commas that are not inside `( … )` value sets."""
    clauses, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise bad_request(f"unable to parse requirement: unbalanced parentheses in {text!r}")
        if char == "," and depth == 0:
            clauses.append(text[start:i])
            start = i + 1
    if depth:
        raise bad_request(f"unable to parse requirement: unbalanced parentheses in {text!r}")
    clauses.append(text[start:])
    return [c.strip() for c in clauses]


def _check_label(key: str, values: tuple[str, ...]) -> None:
    if len(key) > 316 or not _KEY.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r}")
    for value in values:
        if len(value) > 63 or not _VALUE.match(value):
            raise bad_request(f"unable to parse requirement: invalid label value: {value!r}")


def _parse_clause(clause: str) -> Requirement:
    if not clause:
        raise bad_request("unable to parse requirement: found '', expected: identifier")
    if match := _SET_OP.match(clause):
        values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
        if not values:
            raise bad_request(
                "unable to parse requirement: for 'in', 'notin' operators, "
                f"values set can't be empty: {clause!r}"
            )
        return Requirement(match["key"], match["op"], values)
    if match := _EQ_OP.match(clause):
        op = "=" if match["op"] == "==" else match["op"]
        return Requirement(match["key"], op, (match["value"],))
    if clause.startswith("!"):
        return Requirement(clause[1:].strip(), "!exists")
    return Requirement(clause, "exists")


def _empty_clause_message(index: int, *, last: bool) -> str:
    """The apiserver's lexer wording for a selector with nothing between (or before, or after) commas."""
    if index == 0:
        return "found ',', expected: !, identifier, or 'end of string'"
    return f"found '{'' if last else ','}', expected: identifier after ','"


def parse_label_selector(text: str | None) -> Selector:
    """Parse `?labelSelector=`; an empty or missing selector matches everything."""
    if not text or not text.strip():
        return ()
    clauses = _split_clauses(text)
    for index, clause in enumerate(clauses):
        if not clause:
            raise bad_request(_empty_clause_message(index, last=index == len(clauses) - 1))
    requirements = tuple(_parse_clause(c) for c in clauses)
    for req in requirements:
        _check_label(req.key, req.values)
    return requirements


def parse_field_selector(text: str | None, resource: str) -> Selector:
    """Parse `?fieldSelector=` for `resource`; unknown fields are rejected like the apiserver does."""
    if not text or not text.strip():
        return ()
    allowed = FIELD_LABELS.get(resource, frozenset()) | {"metadata.name", "metadata.namespace"}
    requirements = []
    for clause in _split_clauses(text):
        match = _EQ_OP.match(clause)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{clause}'")
        if match["key"] not in allowed:
            raise bad_request(f"field label not supported: {match['key']}")
        op = "=" if match["op"] == "==" else match["op"]
        requirements.append(Requirement(match["key"], op, (match["value"],)))
    return tuple(requirements)


def labels_match(selector: Selector, labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(r.key in labels, labels.get(r.key, "")) for r in selector)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """Read a dotted path; a missing field reads as "" (so `spec.nodeName=` selects unbound pods)."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    return "" if current is None else str(current)


def fields_match(selector: Selector, obj: Mapping[str, Any]) -> bool:
    return all(r.matches(True, field_value(obj, r.key)) for r in selector)


def object_filter(
    label_selector: str | None, field_selector: str | None, resource: str
) -> Callable[[Mapping[str, Any]], bool]:
    """Build a predicate `obj -> bool` from the two query parameters; raises `ApiError(400)` if bad."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector, resource)

    def matches(obj: Mapping[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        return labels_match(labels, metadata.get("labels")) and fields_match(fields, obj)

    return matches


__all__ = ["ApiError", "Requirement", "object_filter", "parse_field_selector", "parse_label_selector"]
