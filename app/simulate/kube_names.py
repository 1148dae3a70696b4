"""Name and label rules of the apiserver (apimachinery `validation` package), as pure predicates.

Each function returns a list of problem messages (empty when valid), worded like the apiserver's, so
callers can attach them to the field path they are checking.
"""

from __future__ import annotations

import re

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
QUALIFIED_MESSAGE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
    "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
ENV_MESSAGE = (
    "a valid environment variable name must consist only of printable ASCII characters other than '='"
)


def dns1123_label(value: str) -> list[str]:
    problems = [] if len(value) <= 63 else ["must be no more than 63 characters"]
    return problems + ([] if _DNS1123_LABEL.match(value) else [LABEL_MESSAGE])


def dns1123_subdomain(value: str) -> list[str]:
    problems = [] if len(value) <= 253 else ["must be no more than 253 characters"]
    return problems + ([] if _DNS1123_SUBDOMAIN.match(value) else [SUBDOMAIN_MESSAGE])


def qualified_name(value: str) -> list[str]:
    """Label/annotation keys: optional DNS subdomain prefix, `/`, then a name of at most 63 characters."""
    prefix, slash, name = value.rpartition("/")
    problems: list[str] = []
    if slash:
        if not prefix:
            problems.append("prefix part must be non-empty")
        else:
            problems += [f"prefix part {p}" for p in dns1123_subdomain(prefix)]
    if not name:
        return [*problems, "name part must be non-empty"]
    if len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME.match(name):
        problems.append(QUALIFIED_MESSAGE)
    return problems


def label_value(value: str) -> list[str]:
    problems = [] if len(value) <= 63 else ["must be no more than 63 characters"]
    return problems + ([] if _LABEL_VALUE.match(value) else [VALUE_MESSAGE])


def env_var_name(value: str) -> list[str]:
    """Kubernetes ≥1.32 relaxed rule: any printable ASCII except '='."""
    if not value:
        return ["environment variable name must not be empty"]
    if all(32 <= ord(c) <= 126 and c != "=" for c in value):
        return []
    return [ENV_MESSAGE]
