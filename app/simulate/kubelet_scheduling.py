"""Does a pod fit the simulated node? The scheduler's node-selector and required node-affinity checks.

Pure: pod spec and node labels in, yes/no out. Taints, resources and preferred affinity are not
simulated (one node, unlimited capacity); a pod that does not fit stays Pending as Unschedulable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression.get("key", ""), expression.get("operator", "")
    values = [str(v) for v in expression.get("values") or []]
    present, value = key in labels, labels.get(key, "")
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and values:
        try:
            number, bound = int(value), int(values[0])
        except ValueError:
            return False
        return number > bound if operator == "Gt" else number < bound
    return False


def _required_terms(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    return list(required.get("nodeSelectorTerms") or [])


def fits_node(spec: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """nodeSelector must match exactly; of the required affinity terms, any one must match fully."""
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    terms = _required_terms(spec)
    if not terms:
        return True
    return any(
        all(_expression_matches(e, labels) for e in term.get("matchExpressions") or []) for term in terms
    )
