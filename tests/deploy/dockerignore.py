"""Decides which paths of the build context a `.dockerignore` admits, as Docker's builder does.

Input: the text of `.dockerignore` and context-relative POSIX paths. Rules (Docker reference):
one pattern per line, `#` comments, `*` and `?` stay within one path segment, `**` spans any number
of segments, a leading `!` re-admits, the last matching line wins, and a pattern that matches a
parent directory matches everything below it.
"""

from __future__ import annotations

import re


def _regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        else:
            char = pattern[index]
            parts.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
            index += 1
    return re.compile("".join(parts))


def rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, compiled pattern) per meaningful line, in file order."""
    parsed = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        parsed.append((exception, _regex(pattern)))
    return parsed


def is_admitted(path: str, parsed: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether `path` reaches the build context."""
    segments = path.strip("/").split("/")
    candidates = ["/".join(segments[: end + 1]) for end in range(len(segments))]
    admitted = True
    for exception, regex in parsed:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            admitted = exception
    return admitted
