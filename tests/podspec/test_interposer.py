"""Interposers turn a container's command + args into BUILDKITE_COMMAND (reference §3.3)."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podspec.interposer import interpose, shell_quote

CASES = [
    pytest.param(
        "buildkite",
        ["echo 'hi'", "ls -l", "touch"],
        ["a b.txt"],
        "echo 'hi'\nls -l\ntouch 'a b.txt'",
        id="buildkite-reference-example",
    ),
    pytest.param("buildkite", ["go test ./..."], [], "go test ./...", id="buildkite-one-line"),
    pytest.param("buildkite", ["make"], ["-j", "4"], "make -j 4", id="buildkite-safe-args-stay-bare"),
    pytest.param("buildkite", ["echo"], ["it's", ""], "echo 'it'\\''s' ''", id="buildkite-quote-and-empty"),
    pytest.param("", ["a", "b"], ["c"], "a\nb c", id="empty-name-means-buildkite"),
    pytest.param(None, ["a"], [], "a", id="none-means-buildkite"),
    pytest.param(
        "vector", ["sh", "-c"], ["echo $HOME; ls"], "sh -c 'echo $HOME; ls'", id="vector-kubernetes-argv"
    ),
    pytest.param("vector", ["printf", "%s\n"], ["a b"], "printf '%s\n' 'a b'", id="vector-newline-quoted"),
    pytest.param("legacy", ["echo", "a b"], ["c"], "echo a b c", id="legacy-plain-join"),
    pytest.param("buildkite", [], ["ignored"], "make test", id="no-command-runs-step-command"),
    pytest.param("vector", [], [], "make test", id="no-command-vector-runs-step-command"),
]


@pytest.mark.parametrize(("kind", "command", "args", "expected"), CASES)
def test_interposer_builds_the_buildkite_command(
    kind: str | None, command: list, args: list, expected: str
) -> None:
    assert interpose(command, args, interposer=kind, step_command="make test") == expected


def test_an_unknown_interposer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown interposer"):
        interpose(["a"], [], interposer="zsh", step_command="")


@given(st.lists(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")), min_size=1))
def test_vector_output_splits_back_into_the_same_argv(words: list[str]) -> None:
    assert shlex.split(interpose(words[:1], words[1:], interposer="vector", step_command="")) == words


@pytest.mark.parametrize("word", ["#comment", "~user", "$(id)", "a;b", "*", "{a,b}", "x\ny", "it's"])
def test_shell_specials_are_quoted(word: str) -> None:
    assert shell_quote(word).startswith("'")
    assert shlex.split(shell_quote(word)) == [word]
