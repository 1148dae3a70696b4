"""Container image references, parsed with the docker distribution grammar.

Input: ``image`` strings from pipeline steps, pod specs, patches and the controller config. The
kubelet refuses a pod whose image it cannot parse (``InvalidImageName``), so the builder parses every
image first and turns a bad one into a build error the user sees at once. Parsing follows
``reference.ParseNormalizedNamed`` — the grammar below plus Docker Hub normalisation, which is
what the kubelet applies::

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [domain "/"] path-component ["/" path-component]*
    domain      := host [":" port]        host: DNS-like components, or "[" IPv6 "]"
    path-component := [a-z0-9]+ (separator [a-z0-9]+)*   separator: "." | "_" | "__" | "-"+
    tag         := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest      := algorithm ":" hex      (sha256: 64, sha384: 96, sha512: 128 lower-case hex)

A first component is the registry only if it contains "." or ":", is ``localhost``, or has upper
case; otherwise the image is on Docker Hub (``ubuntu`` → ``docker.io/library/ubuntu``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ImageReference", "is_digested", "parse_image_reference"]

NAME_TOTAL_LENGTH_MAX = 255
DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAINS = frozenset({"index.docker.io"})
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_REFERENCE_LENGTH_MAX = NAME_TOTAL_LENGTH_MAX + 1 + 128 + 1 + len("sha512:") + 128
_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
_NAME_RE = re.compile(rf"({_DOMAIN})/({_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A parsed, normalised image reference: ``ubuntu:22.04`` → docker.io, library/ubuntu, 22.04."""

    domain: str  # registry host[:port]; "docker.io" for Docker Hub
    path: str  # repository path; official Docker Hub images get "library/"
    tag: str | None = None
    digest: str | None = None  # "algorithm:hex", e.g. "sha256:…"

    @property
    def name(self) -> str:
        """The fully qualified repository, e.g. ``docker.io/library/ubuntu``."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return f"{self.name}{tag}{digest}"


def parse_image_reference(ref: str) -> ImageReference:
    """Parse ``ref`` or raise ``ValueError("invalid reference format: <reason>")``."""
    if not isinstance(ref, str):
        raise ValueError(f"invalid reference format: expected a string, got {type(ref).__name__}")
    if len(ref) > _REFERENCE_LENGTH_MAX:  # no valid reference is this long; spare the regex
        raise ValueError(f"invalid reference format: {_TOO_LONG}")
    if not ref:
        raise ValueError("invalid reference format: repository name must have at least one component")
    if _IDENTIFIER_RE.fullmatch(ref):
        raise ValueError(
            "invalid reference format: a 64-character hexadecimal string is an image ID, not a name"
        )
    domain, remainder = _split_domain(ref)
    match = _REFERENCE_RE.fullmatch(f"{domain}/{remainder}")
    if match is None:
        raise ValueError(f"invalid reference format: {_diagnose(ref)}")
    name, tag, digest = match.groups()
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise ValueError(f"invalid reference format: {_TOO_LONG}")
    if digest is not None:
        _check_digest(digest)
    path = name[len(domain) + 1 :]
    return ImageReference(domain=domain, path=path, tag=tag, digest=digest)


def is_digested(ref: str) -> bool:
    """True when ``ref`` pins its image by digest (``…@sha256:…``). An invalid reference is not pinned."""
    try:
        return parse_image_reference(ref).digest is not None
    except ValueError:
        return False


def _split_domain(ref: str) -> tuple[str, str]:
    """Docker's splitDockerDomain: (registry, rest), with Docker Hub names normalised."""
    first, slash, rest = ref.partition("/")
    is_registry = slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first)
    domain, remainder = (first, rest) if is_registry else (DEFAULT_DOMAIN, ref)
    if domain in _LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = f"library/{remainder}"
    return domain, remainder


def _diagnose(ref: str) -> str:
    """Why ``ref`` does not match the grammar, in words a pipeline author can act on."""
    if any(ch.isspace() for ch in ref):
        return f"{_quote(ref)} contains whitespace"
    name_and_tag, at, digest = ref.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        return f"invalid digest {_quote(digest)}: expected algorithm:hex, e.g. sha256:<64 hex digits>"
    repository, tag = name_and_tag, None
    if ":" in name_and_tag.rsplit("/", 1)[-1]:
        repository, _, tag = name_and_tag.rpartition(":")
    if tag is not None and not _TAG_RE.fullmatch(tag):
        return (
            f"invalid tag {tag!r}: up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        )
    if repository.lower() != repository:
        return f"repository name {_quote(repository)} must be lowercase"
    return (
        f"invalid repository name {_quote(repository)}: components of lower-case letters and digits"
        " joined by '.', '_', '__' or '-', separated by '/', after an optional registry host[:port]"
    )


def _check_digest(digest: str) -> None:
    algorithm, _, hex_digits = digest.partition(":")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise ValueError(f"invalid reference format: unsupported digest algorithm {algorithm!r} (use sha256)")
    if len(hex_digits) != expected:
        raise ValueError(
            f"invalid reference format: a {algorithm} digest has {expected} hex digits, got {len(hex_digits)}"
        )
    if hex_digits.lower() != hex_digits:
        raise ValueError("invalid reference format: digest hex digits must be lower-case")


def _quote(text: str) -> str:
    """repr() of user text, cut short: error messages end up in build logs."""
    return repr(text if len(text) <= 80 else text[:77] + "...")
