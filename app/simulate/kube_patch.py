"""The three PATCH flavours of the apiserver, applied to plain JSON objects.

- JSON merge patch (RFC 7386, `application/merge-patch+json`): maps merge, `null` deletes, lists replace.
- JSON patch (RFC 6902, `application/json-patch+json`): a list of add/remove/replace/move/copy/test ops.
- Strategic merge patch (`application/strategic-merge-patch+json`): like merge patch, but lists whose
  schema says `x-kubernetes-patch-strategy: merge` merge element-wise by their merge key
  (containers by `name`, conditions by `type`), with the `$patch` / `$retainKeys` /
  `$deleteFromPrimitiveList` / `$setElementOrder` directives. The strategy table is read from the
  bundled OpenAPI schemas (`kube_schema.field_patch_meta`), the authoritative source.

Inputs come from request bodies, so every malformed patch raises `PatchError` (rendered as a 4xx).
"""

from __future__ import annotations

import copy
from typing import Any

from app.simulate.kube_schema import field_patch_meta


class PatchError(ValueError):
    """The patch document is malformed or cannot apply to the object."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: returns a new value; `target` is not modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---- RFC 6902 -------------------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index: {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not for_add):
        raise PatchError(f"array index out of bounds: {index}")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    for token in tokens[:-1]:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, for_add=False)]
        else:
            raise PatchError(f"path not found: /{'/'.join(tokens)}")
    return doc


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise PatchError(f"path not found: /{'/'.join(tokens)}")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError(f"cannot add to a scalar at /{'/'.join(tokens)}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    removed = _get(doc, tokens)
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[_index(parent, last, for_add=False)]
    return removed


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: apply `operations` to a copy of `target`; a failed `test` raises PatchError."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError(f"invalid json patch operation: {op!r}")
        doc = _apply_op(doc, op)
    return doc


def _apply_op(doc: Any, op: dict[str, Any]) -> Any:
    kind, tokens = op["op"], _pointer(op.get("path"))
    if kind in ("add", "replace", "test") and "value" not in op:
        raise PatchError(f"operation {kind!r} needs a value")
    if kind == "add":
        return _add(doc, tokens, copy.deepcopy(op["value"]))
    if kind == "remove":
        _remove(doc, tokens)
        return doc
    if kind == "replace":
        _get(doc, tokens)  # replace requires the target to exist
        if tokens:
            _remove(doc, tokens)
        return _add(doc, tokens, copy.deepcopy(op["value"]))
    if kind in ("move", "copy"):
        source = _pointer(op.get("from"))
        value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
        return _add(doc, tokens, value)
    if kind == "test":
        if _get(doc, tokens) != op["value"]:
            raise PatchError(f"test operation failed at {op['path']}")
        return doc
    raise PatchError(f"unsupported json patch operation: {kind!r}")


# ---- strategic merge --------------------------------------------------------------------------------

_ORDER_PREFIX = "$setElementOrder/"
_DELETE_PRIMITIVE_PREFIX = "$deleteFromPrimitiveList/"


def strategic_merge(original: Any, patch: Any, definition: str | None) -> Any:
    """Apply a strategic merge patch to `original`, whose type is the schema `$defs` name `definition`."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    return _merge_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch, definition)


def _merge_map(target: dict[str, Any], patch: dict[str, Any], definition: str | None) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    if directive is not None:
        raise PatchError(f"unknown patch type {directive!r} in map")
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith(_DELETE_PRIMITIVE_PREFIX):
            field = key[len(_DELETE_PRIMITIVE_PREFIX) :]
            target[field] = [v for v in target.get(field) or [] if v not in (value or [])]
        elif key.startswith("$"):
            continue  # $setElementOrder/ and $retainKeys only steer ordering / retention
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = _merge_value(target.get(key), value, definition, key)
    if isinstance(retain, list):
        target = {k: v for k, v in target.items() if k in retain}
    return target


def _merge_value(current: Any, value: Any, definition: str | None, key: str) -> Any:
    meta = field_patch_meta(definition, key) if definition else None
    if isinstance(value, dict):
        child = meta.definition if meta else None
        return _merge_map(current if isinstance(current, dict) else {}, value, child)
    if isinstance(value, list) and meta and meta.is_list and "merge" in meta.strategy.split(","):
        return _merge_list(
            current if isinstance(current, list) else [], value, meta.merge_key, meta.definition
        )
    if isinstance(value, list):
        return [v for v in copy.deepcopy(value) if not (isinstance(v, dict) and v.get("$patch") == "replace")]
    return copy.deepcopy(value)


def _merge_list(current: list[Any], patch: list[Any], merge_key: str, definition: str | None) -> list[Any]:
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    if not merge_key:  # list of primitives: set union, keeping order
        return current + [copy.deepcopy(v) for v in patch if v not in current]
    result = list(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError(f"map: {item!r} does not contain declared merge key: {merge_key}")
        position = next(
            (i for i, e in enumerate(result) if isinstance(e, dict) and e.get(merge_key) == item[merge_key]),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(_merge_map({}, item, definition))
        else:
            result[position] = _merge_map(result[position], item, definition)
    return result
