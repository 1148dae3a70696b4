"""The fake Buildkite's GraphQL endpoint (`POST /v1`), executed by graphql-core on the real schema.

Because the real SDL (package data `buildkite-schema.graphql`) validates every query, a field the
production API lacks fails here with the same validation error. Around execution it keeps Buildkite's
limits (reference/buildkite-api.md §2.1): Bearer-token auth, a 50,000 requested-complexity cap per
query (HTTP 200 + errors), an organisation budget of actual points per window (HTTP 429 + Retry-After),
and the `RateLimit-*` headers on every answer.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    build_schema,
    execute_sync,
    get_named_type,
    get_operation_ast,
    is_composite_type,
    parse,
    validate,
    value_from_ast_untyped,
)
from graphql.type import GraphQLNamedType
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.simulate.buildkite_faults import PointsBudget
from app.simulate.buildkite_graphql_nodes import DEFAULT_PAGE_SIZE, GraphQLRoot
from app.simulate.buildkite_middleware import graphql_rate_limit_message

MAX_COMPLEXITY = 50_000


@functools.cache
def load_schema() -> GraphQLSchema:
    """Buildkite's schema, parsed once per process (the SDL is 12k lines)."""
    sdl = resources.files("app.simulate").joinpath("buildkite-schema.graphql").read_text(encoding="utf-8")
    return build_schema(sdl)


@dataclass
class GraphQLSettings:
    """What the endpoint checks; the fake's owner may change these while it runs."""

    api_tokens: frozenset[str]
    max_complexity: int = MAX_COMPLEXITY


def requested_complexity(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: dict[str, Any],
) -> int:
    """Buildkite's *requested* cost: 1 per object field, times the page size for connections."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    values = dict(variables)
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name not in values and definition.default_value is not None:
            values[name] = value_from_ast_untyped(definition.default_value)
    root = schema.get_root_type(operation.operation)
    return _cost(operation.selection_set, root, fragments, values, schema) if root is not None else 0


def _cost(
    selection_set: SelectionSetNode | None,
    parent: GraphQLNamedType,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    schema: GraphQLSchema,
) -> int:
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            total += _field_cost(selection, parent, fragments, variables, schema)
        elif isinstance(selection, InlineFragmentNode):
            condition = (
                schema.get_type(selection.type_condition.name.value) if selection.type_condition else parent
            )
            total += _cost(selection.selection_set, condition or parent, fragments, variables, schema)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments:
            fragment = fragments[selection.name.value]
            condition = schema.get_type(fragment.type_condition.name.value) or parent
            total += _cost(fragment.selection_set, condition, fragments, variables, schema)
    return total


def _field_cost(
    field: FieldNode,
    parent: GraphQLNamedType,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    schema: GraphQLSchema,
) -> int:
    definition = getattr(parent, "fields", {}).get(field.name.value)
    if definition is None:
        return 0
    named = get_named_type(definition.type)
    if not is_composite_type(named):
        return 0  # scalars and enums are free
    children = _cost(field.selection_set, named, fragments, variables, schema)
    if not named.name.endswith("Connection"):
        return 1 + children
    args = {arg.name.value: value_from_ast_untyped(arg.value, variables) for arg in field.arguments or ()}
    size = args.get("first") or args.get("last") or DEFAULT_PAGE_SIZE
    return 1 + max(int(size), 0) * children


def actual_points(data: Any) -> int:
    """Buildkite's *actual* cost: one point per object the answer really contains (not the root)."""
    return _objects(data) - 1 if isinstance(data, dict) else 0


def _objects(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(_objects(child) for child in value.values())
    if isinstance(value, list):
        return sum(_objects(item) for item in value)
    return 0


def _error(message: str, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message}]}, status_code=status, headers=headers)


def _parse_body(body: bytes) -> tuple[str, dict[str, Any], str | None]:
    """query, variables, operationName; ValueError with a reason for a malformed request."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise ValueError("Request body must be a JSON object with a string `query`")
    variables = payload.get("variables") or {}
    if isinstance(variables, str):
        variables = json.loads(variables) if variables.strip() else {}
    if not isinstance(variables, dict):
        raise ValueError("`variables` must be a JSON object")
    operation = payload.get("operationName")
    if operation is not None and not isinstance(operation, str):
        raise ValueError("`operationName` must be a string")
    return payload["query"], variables, operation


MAX_CACHED_DOCUMENTS = 256


class GraphQLEndpoint:
    """A Starlette endpoint (sync, so it runs in the thread pool) serving Buildkite's GraphQL."""

    def __init__(self, root: GraphQLRoot, budget: PointsBudget, settings: GraphQLSettings) -> None:
        self.root = root
        self.budget = budget
        self.settings = settings
        self.schema = load_schema()
        # Parsed and validated documents by query text. Clients send the same few query texts with
        # different variables (as the controller does), and a 100-alias document costs ~20 ms of CPU to
        # parse and validate: a real Buildkite would not take it from the fake apiserver sharing this process.
        self._documents: dict[str, tuple[DocumentNode, list[GraphQLError]] | GraphQLError] = {}

    def _limit_headers(self) -> dict[str, str]:
        return {
            "RateLimit-Remaining": str(self.budget.remaining()),
            "RateLimit-Limit": str(self.budget.limit),
            "RateLimit-Reset": str(self.budget.reset_in()),
        }

    def handle(self, request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.settings.api_tokens:
            return _error("No valid API Access Token provided", 401)
        if self.budget.remaining() <= 0:
            wait = self.budget.reset_in()
            headers = self._limit_headers() | {"Retry-After": str(wait)}
            return _error(graphql_rate_limit_message(self.budget.limit, wait), 429, headers)
        try:
            query, variables, operation = _parse_body(request.state.call.body)
        except ValueError as exc:
            return _error(str(exc), 400, self._limit_headers())
        return self._run(query, variables, operation, want_stats=_wants_stats(request))

    def _run(
        self, query: str, variables: dict[str, Any], operation: str | None, *, want_stats: bool
    ) -> JSONResponse:
        parsed = self._parse_and_validate(query)
        if isinstance(parsed, GraphQLError):
            return JSONResponse({"errors": [parsed.formatted]}, headers=self._limit_headers())
        document, errors = parsed
        selected = get_operation_ast(document, operation)
        if not errors and selected is None:
            reason = f"No operation named {operation!r}" if operation else "No single operation to run"
            errors = [GraphQLError(reason)]
        if errors or selected is None:
            return JSONResponse({"errors": [e.formatted for e in errors]}, headers=self._limit_headers())
        requested = requested_complexity(self.schema, document, selected, variables)
        if requested > self.settings.max_complexity:
            limit = self.settings.max_complexity
            message = f"Query has complexity of {requested}, which exceeds max complexity of {limit}"
            return _error(message, 200, self._limit_headers())
        result = execute_sync(
            self.schema, document, root_value=self.root, variable_values=variables, operation_name=operation
        )
        actual = actual_points(result.data)
        self.budget.charge(actual)
        body: dict[str, Any] = dict(result.formatted)
        if want_stats:
            body["stats"] = {"requestedComplexity": requested, "actualComplexity": actual}
        headers = self._limit_headers() | {
            "RateLimit-Complexity-Requested": str(requested),
            "RateLimit-Complexity-Actual": str(actual),
        }
        return JSONResponse(body, headers=headers)

    def _parse_and_validate(self, query: str) -> tuple[DocumentNode, list[GraphQLError]] | GraphQLError:
        known = self._documents.get(query)
        if known is not None:
            return known
        try:
            document = parse(query)
            parsed: tuple[DocumentNode, list[GraphQLError]] | GraphQLError = (
                document,
                list(validate(self.schema, document)),
            )
        except GraphQLError as exc:
            parsed = exc
        if len(self._documents) >= MAX_CACHED_DOCUMENTS:
            self._documents.clear()  # hostile or generated queries: start over rather than grow
        self._documents[query] = parsed
        return parsed


def _wants_stats(request: Request) -> bool:
    return request.headers.get("buildkite-include-query-stats", "").lower() == "true"
