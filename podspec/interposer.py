"""Interposers: how a container's ``command`` + ``args`` become the ``BUILDKITE_COMMAND`` it runs.

Command containers get tini + ``kubernetes-bootstrap`` as their entrypoint, so the user's
``command``/``args`` are handed to the agent as one shell string instead (reference §3.3):

* ``buildkite`` (default): each ``command`` item is a line of shell; ``args`` are quoted and appended
  to the last line. ``[echo 'hi', ls -l, touch] + [a b.txt]`` → ``echo 'hi'\\nls -l\\ntouch 'a b.txt'``.
* ``vector``: Kubernetes semantics — every element is one argv word, quoted, joined by spaces.
* ``legacy``: plain space join without quoting (agent-stack-k8s ≤ v0.14).

A container without ``command`` runs the step's own command and its ``args`` are discarded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

INTERPOSERS = ("buildkite", "vector", "legacy")
# Words made only of these characters mean the same to a POSIX shell quoted or not.
_SAFE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def shell_quote(word: str) -> str:
    """Quote ``word`` for a POSIX shell: bare when safe, else single quotes (``'`` as ``'\\''``)."""
    if _SAFE_WORD.fullmatch(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def interpose(
    command: Sequence[str], args: Sequence[str], *, interposer: str | None, step_command: str
) -> str:
    """The ``BUILDKITE_COMMAND`` for a container with this ``command`` and ``args``."""
    if not command:
        return step_command
    kind = interposer or "buildkite"
    if kind == "buildkite":
        lines = list(command)
        if args:
            lines[-1] = " ".join([lines[-1], *map(shell_quote, args)])
        return "\n".join(lines)
    if kind == "vector":
        return " ".join(shell_quote(word) for word in [*command, *args])
    if kind == "legacy":
        return " ".join([*command, *args])
    raise ValueError(f"unknown interposer {interposer!r}; use one of {', '.join(INTERPOSERS)}")
