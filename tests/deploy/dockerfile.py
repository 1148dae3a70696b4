"""A small Dockerfile reader for the deploy tests: instructions grouped by build stage.

Input is the text of the repository's `Dockerfile`. It follows the Dockerfile reference for what
that file uses: parser directives, comments, backslash line continuations, `ARG` before the first
`FROM` (global build arguments with defaults), `FROM image AS name`, `--flag=value` options, and
JSON (exec-form) arguments. Heredocs and unknown instructions raise `DockerfileError` rather than
being misread, so a test never passes on a file it did not understand.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

KEYWORDS = frozenset(
    [
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ]
)
_FLAG = re.compile(r"--([a-z-]+)(?:=(\S*))?\s*")


class DockerfileError(ValueError):
    """The text is not a Dockerfile this reader understands; the message names the line."""


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword, `--flags` (name → list of values) and the rest of the line."""

    keyword: str
    flags: dict[str, list[str]]
    value: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array form of CMD/ENTRYPOINT/RUN, or None when the shell form is used."""
        try:
            parsed = json.loads(self.value)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed) else None

    def words(self) -> list[str]:
        """The value split like a shell would (quotes removed)."""
        return shlex.split(self.value)


@dataclass
class Stage:
    """A build stage: the base image (build arguments resolved), its name and its instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """Every `ENV key=value` pair of the stage, later ones winning."""
        pairs: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in instruction.words():
                key, sep, value = word.partition("=")
                if not sep:
                    raise DockerfileError(f"line {instruction.line}: ENV without '=' is not supported")
                pairs[key] = value
        return pairs


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines; drop comments, blank lines and the leading parser directives."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    in_directives = True
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if in_directives and re.fullmatch(r"#\s*\w+\s*=.*", stripped):
            continue
        in_directives = False
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(p for p in pending if p)))
        pending = []
    if pending:
        raise DockerfileError(f"line {start}: continuation runs past the end of the file")
    return lines


def _instruction(number: int, line: str) -> Instruction:
    keyword, _, rest = line.partition(" ")
    keyword = keyword.upper()
    if keyword not in KEYWORDS:
        raise DockerfileError(f"line {number}: unknown instruction {keyword!r}")
    if "<<" in rest and keyword in {"RUN", "COPY", "ADD"}:
        raise DockerfileError(f"line {number}: heredocs are not supported by this reader")
    flags: dict[str, list[str]] = {}
    rest = rest.strip()
    while match := _FLAG.match(rest):
        flags.setdefault(match[1], []).append(match[2] or "")
        rest = rest[match.end() :]
    return Instruction(keyword, flags, rest, number)


def parse(text: str) -> list[Stage]:
    """Read a Dockerfile into its stages, resolving `${ARG}` in FROM from the global ARG defaults."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(text):
        instruction = _instruction(number, line)
        if instruction.keyword == "FROM":
            words = instruction.words()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            if len(words) not in (1, 3) or (len(words) == 3 and name is None):
                raise DockerfileError(f"line {number}: FROM must be 'image' or 'image AS name'")
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m[1], ""), words[0])
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if instruction.keyword != "ARG":
                raise DockerfileError(f"line {number}: only ARG may come before the first FROM")
            key, _, default = instruction.value.partition("=")
            global_args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise DockerfileError("no FROM instruction")
    return stages
