"""Commands given as one string (``--args``, ``--entrypoint``) are split as docker splits them
(github.com/google/shlex): shell quoting, and a comment only at the start of a word."""

from __future__ import annotations

import pytest
from shoal import specs
from shoal.shellwords import ShellWordsError, split_words
from shoal.specs import SpecError


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("sh -c 'sleep 1000'", ["sh", "-c", "sleep 1000"]),
        ('sh -c "echo \\"hi\\" there"', ["sh", "-c", 'echo "hi" there']),
        ("a\\ b  c", ["a b", "c"]),
        ("a#b c", ["a#b", "c"]),
        ("a #comment d", ["a"]),
        ("a '#b' c", ["a", "#b", "c"]),
        ("", []),
        ("   ", []),
    ],
)
def test_split_as_docker_does(text: str, words: list[str]) -> None:
    assert split_words(text) == words


@pytest.mark.parametrize("text", ["sh -c 'sleep", 'echo "x', "trailing\\"])
def test_unsplittable_text_is_refused(text: str) -> None:
    with pytest.raises(ShellWordsError):
        split_words(text)
    with pytest.raises(SpecError, match=r'^invalid --args ".*": no (closing quotation|escaped character)'):
        specs.command_words(text, "--args")


def test_entrypoint_is_split_as_a_shell_does() -> None:
    spec = specs.service_spec({"name": "web", "image": "busybox", "entrypoint": "sh -c 'exec sleep 1000'"})
    assert list(spec.task.container.command) == ["sh", "-c", "exec sleep 1000"]
    updated = specs.updated_spec(spec, {"entrypoint": "/bin/run 'a b'"})
    assert list(updated.task.container.command) == ["/bin/run", "a b"]
    with pytest.raises(SpecError, match="--entrypoint"):
        specs.updated_spec(spec, {"entrypoint": "sh -c 'oops"})
