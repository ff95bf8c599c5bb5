"""Splitting a command given as one string into words, the way docker's CLI does.

docker parses ``service create/update --entrypoint`` and ``service update --args`` with
``github.com/google/shlex``: POSIX quoting (single quotes literal, double quotes with backslash
escapes, backslash outside quotes), and a ``#`` at the start of a word ends the command (a
comment), while a ``#`` inside a word is kept. Python's ``shlex`` quotes the same way but its
comment handling also cuts a word at an inner ``#``, so comments are handled here.
"""

from __future__ import annotations

import io
import shlex


class ShellWordsError(ValueError):
    """The text cannot be split (an unclosed quote or a trailing backslash)."""


def split_words(text: str) -> list[str]:
    """``"sh -c 'sleep 1000'"`` -> ``["sh", "-c", "sleep 1000"]``; ``""`` -> ``[]``."""
    stream = io.StringIO(text)
    lexer = shlex.shlex(stream, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    while True:
        # Between words the lexer has read exactly up to the whitespace that ended the last one,
        # so what is left of ``text`` tells whether the next word starts with a comment.
        rest = text[stream.tell() :].lstrip(lexer.whitespace)
        if not rest or rest.startswith("#"):
            return words
        try:
            word = lexer.get_token()
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise ShellWordsError(str(exc).lower()) from None
        if word is None:
            return words
        words.append(word)
