"""Image references: the docker distribution grammar with Docker Hub normalisation (podspec.images)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from podspec.images import ImageReference, is_digested, parse_image_reference

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param("ubuntu", ("docker.io", "library/ubuntu", None, None), id="hub-official-short-name"),
        pytest.param("ubuntu:22.04", ("docker.io", "library/ubuntu", "22.04", None), id="hub-official-tag"),
        pytest.param(
            "golang:1.23-alpine", ("docker.io", "library/golang", "1.23-alpine", None), id="tag-dash"
        ),
        pytest.param("buildkite/agent:3", ("docker.io", "buildkite/agent", "3", None), id="hub-user-repo"),
        pytest.param(
            "library/ubuntu", ("docker.io", "library/ubuntu", None, None), id="hub-explicit-library"
        ),
        pytest.param(
            "docker.io/ubuntu", ("docker.io", "library/ubuntu", None, None), id="docker-io-official"
        ),
        pytest.param("index.docker.io/ubuntu", ("docker.io", "library/ubuntu", None, None), id="legacy-hub"),
        pytest.param("localhost/x", ("localhost", "x", None, None), id="localhost"),
        pytest.param("localhost:5000/x", ("localhost:5000", "x", None, None), id="localhost-with-port"),
        pytest.param("localhost:5000/a/b:v1", ("localhost:5000", "a/b", "v1", None), id="localhost-nested"),
        pytest.param(
            "ghcr.io/buildkite/agent:3.80.0", ("ghcr.io", "buildkite/agent", "3.80.0", None), id="ghcr"
        ),
        pytest.param(
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:sha-abc",
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com", "team/app", "sha-abc", None),
            id="ecr",
        ),
        pytest.param("[::1]:5000/a:t", ("[::1]:5000", "a", "t", None), id="ipv6-registry"),
        pytest.param("10.0.0.1:5000/a", ("10.0.0.1:5000", "a", None, None), id="ipv4-registry"),
        pytest.param(
            "Registry.Example.com/app", ("Registry.Example.com", "app", None, None), id="domain-case"
        ),
        pytest.param("Foo/bar", ("Foo", "bar", None, None), id="upper-first-component-is-a-registry"),
        pytest.param("a.b__c-d--e/f_g.h", ("a.b__c-d--e", "f_g.h", None, None), id="separators-in-domain"),
        pytest.param("org/f_g.h__i---j", ("docker.io", "org/f_g.h__i---j", None, None), id="separators"),
        pytest.param(f"ubuntu@{SHA256}", ("docker.io", "library/ubuntu", None, SHA256), id="digest-only"),
        pytest.param(
            f"ubuntu:22.04@{SHA256}", ("docker.io", "library/ubuntu", "22.04", SHA256), id="tag-digest"
        ),
        pytest.param(f"ghcr.io/a/b@{SHA512}", ("ghcr.io", "a/b", None, SHA512), id="sha512-digest"),
        pytest.param("x:" + "t" * 128, ("docker.io", "library/x", "t" * 128, None), id="tag-128-chars"),
        pytest.param(
            "x:_Tag.With-Mixed_CASE", ("docker.io", "library/x", "_Tag.With-Mixed_CASE", None), id="tag"
        ),
        pytest.param(
            "localhost:5000", ("docker.io", "library/localhost", "5000", None), id="host-port-alone"
        ),
    ],
)
def test_valid_references_parse_into_their_parts(ref: str, expected: tuple) -> None:
    parsed = parse_image_reference(ref)
    assert (parsed.domain, parsed.path, parsed.tag, parsed.digest) == expected


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        pytest.param("", "at least one component", id="empty"),
        pytest.param("UPPER", "'UPPER' must be lowercase", id="uppercase-short-name"),
        pytest.param("buildkite/Agent", "must be lowercase", id="uppercase-path"),
        pytest.param("registry.io/Foo", "must be lowercase", id="uppercase-after-registry"),
        pytest.param("ubuntu 22.04", "whitespace", id="space"),
        pytest.param(" ubuntu", "whitespace", id="leading-space"),
        pytest.param("ubuntu\n", "whitespace", id="newline"),
        pytest.param("ubuntu:", "invalid tag ''", id="empty-tag"),
        pytest.param("ubuntu:-x", "invalid tag '-x'", id="tag-starts-with-dash"),
        pytest.param("ubuntu:.x", "invalid tag", id="tag-starts-with-dot"),
        pytest.param("x:" + "t" * 129, "invalid tag", id="tag-129-chars"),
        pytest.param("ubuntu:a:b", "invalid repository name 'ubuntu:a'", id="two-tags"),
        pytest.param("ubuntu@", "invalid digest ''", id="empty-digest"),
        pytest.param("ubuntu@sha256:abc", "invalid digest", id="short-digest"),
        pytest.param("ubuntu@sha256", "invalid digest", id="digest-without-hex"),
        pytest.param("ubuntu@1sha:" + "a" * 64, "invalid digest", id="digest-algorithm-starts-with-digit"),
        pytest.param("ubuntu@sha256:" + "g" * 64, "invalid digest", id="digest-not-hex"),
        pytest.param("ubuntu@md5:" + "a" * 32, "unsupported digest algorithm 'md5'", id="unknown-algorithm"),
        pytest.param("ubuntu@sha256:" + "a" * 63 + "a" * 2, "64 hex digits, got 65", id="digest-too-long"),
        pytest.param("ubuntu@sha256:" + "A" * 64, "lower-case", id="digest-upper-hex"),
        pytest.param("-ubuntu", "invalid repository name", id="leading-dash"),
        pytest.param("ubuntu-", "invalid repository name", id="trailing-dash"),
        pytest.param("a//b", "invalid repository name", id="empty-component"),
        pytest.param("a/", "invalid repository name", id="trailing-slash"),
        pytest.param("/a", "invalid repository name", id="leading-slash"),
        pytest.param("a...b", "invalid repository name", id="triple-dot"),
        pytest.param("a___b", "invalid repository name", id="triple-underscore"),
        pytest.param("ubu$ntu", "invalid repository name", id="dollar"),
        pytest.param("ünïcode", "invalid repository name", id="non-ascii"),
        pytest.param("registry.io:port/a", "invalid repository name", id="port-not-numeric"),
        pytest.param("0123456789abcdef" * 4, "image ID", id="64-hex-image-id"),
        pytest.param("a/" * 127 + "a", "more than 255", id="name-too-long"),
        pytest.param("x" * 100_000, "more than 255", id="huge"),
    ],
)
def test_invalid_references_raise_invalid_reference_format_with_the_reason(ref: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid reference format: ") as excinfo:
        parse_image_reference(ref)
    assert reason in str(excinfo.value)


@pytest.mark.parametrize("value", [None, 3, b"ubuntu", ["ubuntu"]], ids=["none", "int", "bytes", "list"])
def test_non_string_references_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="expected a string"):
        parse_image_reference(value)  # type: ignore[arg-type]


def test_error_messages_quote_long_input_cut_short() -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_image_reference("a" * 200 + "!")
    assert len(str(excinfo.value)) < 300


def test_name_within_255_characters_is_accepted() -> None:
    # docker.io/ + 245 characters = 255 exactly
    ref = "org/" + "a" * (255 - len("docker.io/") - len("org/"))
    assert len(parse_image_reference(ref).name) == 255


@pytest.mark.parametrize(
    ("ref", "pinned"),
    [
        pytest.param(f"ubuntu@{SHA256}", True, id="digest"),
        pytest.param(f"ghcr.io/a/b:1@{SHA256}", True, id="tag-and-digest"),
        pytest.param("ubuntu:22.04", False, id="tag"),
        pytest.param("ubuntu", False, id="bare"),
        pytest.param("ubuntu@sha256:abc", False, id="invalid-digest-is-not-pinned"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_digested_is_true_only_for_valid_digest_pinned_references(ref: str, pinned: bool) -> None:
    assert is_digested(ref) is pinned


def test_reference_is_a_frozen_value_that_prints_fully_qualified() -> None:
    parsed = parse_image_reference(f"buildkite/agent:3@{SHA256}")
    assert parsed == ImageReference("docker.io", "buildkite/agent", "3", SHA256)
    assert str(parsed) == f"docker.io/buildkite/agent:3@{SHA256}"
    assert parsed.name == "docker.io/buildkite/agent"
    with pytest.raises(AttributeError):
        parsed.tag = "4"  # type: ignore[misc]


_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separated = st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "---"]), _alnum), max_size=2)
_component = st.builds(lambda first, rest: first + "".join(s + part for s, part in rest), _alnum, _separated)
_tag_chars = "ABCXYZabcxyz0189_"
_tag = st.builds(str.__add__, st.sampled_from(_tag_chars), st.text(alphabet=_tag_chars + ".-", max_size=20))


@settings(derandomize=True)
@given(
    domain=st.sampled_from(["", "localhost:5000/", "ghcr.io/", "my-registry.example.com:443/"]),
    components=st.lists(_component, min_size=1, max_size=3),
    tag=st.none() | _tag,
    digested=st.booleans(),
)
def test_generated_grammar_references_parse_and_print_back(
    domain: str, components: list[str], tag: str | None, digested: bool
) -> None:
    # A first component with a "." names a registry (docker's rule), so it is not part of the path.
    assume(domain or len(components) == 1 or "." not in components[0])
    path = "/".join(components)
    ref = domain + path + (f":{tag}" if tag else "") + (f"@{SHA256}" if digested else "")
    parsed = parse_image_reference(ref)
    assert parsed.path.endswith(path)
    assert parsed.tag == (tag or None)
    assert is_digested(ref) is digested
    assert parse_image_reference(str(parsed)) == parsed


@settings(derandomize=True, max_examples=300)
@given(st.text(max_size=60))
def test_arbitrary_text_either_parses_or_raises_value_error(text: str) -> None:
    try:
        parsed = parse_image_reference(text)
    except ValueError as exc:
        assert str(exc).startswith("invalid reference format")
    else:
        assert parse_image_reference(str(parsed)) == parsed
