"""The "process" of a fake container: a tiny interpreter for the shell a test task runs.

Tests give their tasks small scripts (``sh -c "echo ready; sleep 1; exit 3"``); running them
for real is what makes engine tests slow. This runs the part of sh those scripts use, in the
event loop, with no process: ``echo`` (``>&2`` for stderr, ``$VAR`` and ``$(pwd)``,
``$(hostname)``, ``$(id -u)`` expanded), ``exit N``, ``sleep N``, ``true``, ``false``, ``:``,
``exec CMD``, ``trap 'BODY' SIG...``; statements separated by ``;``, ``&&`` or newlines.

Anything else (a server binary, ``while`` loops, an image's default command) stands for a
process that runs until it is stopped, which is what a service's task does. A health check
(``check=True``) treats such a command as succeeding at once.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: Signal numbers for exit codes (128 + n) and trap names.
SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "USR1": 10, "USR2": 12, "TERM": 15}
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)|\$\(([^)]*)\)")


def signal_name(name: str) -> str:
    """``SIGTERM``, ``TERM`` or ``15`` -> ``TERM``; unknown names pass through upper-cased."""
    upper = name.strip().upper().removeprefix("SIG")
    for known, number in SIGNALS.items():
        if upper == str(number):
            return known
    return upper or "TERM"


def program_of(command: list[str], args: list[str]) -> list[str]:
    """The argv a container runs: the spec's command plus its args (docker's entrypoint+cmd
    when both are given; args alone replace the image's command)."""
    return [*command, *args]


def statements(program: list[str]) -> list[list[str]]:
    """The statements to run, each an argv: ``sh -c SCRIPT`` is split into its statements;
    any other argv is one statement; no argv is the image's default command (runs on)."""
    if len(program) >= 3 and program[0] in ("sh", "/bin/sh", "bash") and program[1] == "-c":
        return parse(program[2])
    return [list(program)] if program else [["<image default command>"]]


#: The commands ``Shell.run`` interprets; any other runs until the container is stopped.
BUILTINS = frozenset({"echo", "exit", "sleep", "true", ":", "false", "trap"})


def runs_on(program: list[list[str]]) -> bool:
    """Whether ``program`` is one command the interpreter does not know (the image's default
    command, a server): it would only wait to be stopped, so a container needs no task for it."""
    if len(program) != 1:
        return False
    words = program[0][1:] if program[0][0] == "exec" and len(program[0]) > 1 else program[0]
    return words[0] not in BUILTINS


def parse(script: str) -> list[list[str]]:
    """Split a script into statements on ``;``, ``&&`` and newlines outside quotes."""
    result: list[list[str]] = []
    current: list[str] = []
    quote = ""
    index = 0
    while index < len(script):
        char = script[index]
        if quote:
            if char == quote:
                quote = ""
            current.append(char)
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char in ";\n" or script.startswith("&&", index):
            _add(result, "".join(current))
            current = []
            index += 1 if char in ";\n" else 2
            continue
        else:
            current.append(char)
        index += 1
    _add(result, "".join(current))
    return result


def _add(result: list[list[str]], text: str) -> None:
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    if words:
        result.append(words)


@dataclass
class Shell:
    """What a script can see and do: its environment and where its output goes."""

    env: Mapping[str, str]
    emit: Callable[[str, str], None]  # (stream, text)
    workdir: str = "/"
    hostname: str = ""
    user: str = ""
    #: Signal name -> trap body ("" = ignored), as ``trap`` registered them.
    traps: dict[str, str] = field(default_factory=dict)

    def expand(self, word: str) -> str:
        def value(match: re.Match[str]) -> str:
            if match.group(3) is not None:
                return self._substitute(match.group(3).strip())
            return self.env.get(match.group(1) or match.group(2), "")

        return _VARIABLE.sub(value, word)

    def _substitute(self, command: str) -> str:
        if command == "pwd":
            return self.workdir or "/"
        if command == "hostname":
            return self.hostname
        if command == "id -u":
            return self.user.split(":")[0] if self.user.split(":")[0].isdigit() else "0"
        return ""

    async def run(self, program: list[list[str]], *, check: bool = False) -> int:
        """Run the statements; return the exit status. A command this interpreter does not
        know runs until cancelled (``check``: succeeds at once)."""
        status = 0
        for words in program:
            if words[0] == "exec" and len(words) > 1:
                words = words[1:]
            name, argv = words[0], [self.expand(w) for w in words[1:]]
            if name == "echo":
                stream = "stdout"
                if argv and argv[-1] in (">&2", "1>&2"):
                    stream, argv = "stderr", argv[:-1]
                self.emit(stream, " ".join(argv))
                status = 0
            elif name == "exit":
                return _exit_code(argv, status)
            elif name == "sleep":
                seconds = _seconds(argv)
                if seconds == float("inf"):
                    await asyncio.Event().wait()
                await asyncio.sleep(seconds)
                status = 0
            elif name in ("true", ":"):
                status = 0
            elif name == "false":
                status = 1
            elif name == "trap" and argv:
                for sig in argv[1:]:
                    self.traps[signal_name(sig)] = argv[0]
                status = 0
            elif check:
                status = 0
            else:
                await asyncio.Event().wait()  # a server, a loop: runs until stopped
        return status


def _exit_code(argv: list[str], last: int) -> int:
    if not argv:
        return last
    try:
        return int(argv[0]) & 0xFF
    except ValueError:
        return 2


def _seconds(argv: list[str]) -> float:
    if not argv or argv[0] == "infinity":
        return float("inf") if argv else 0.0
    try:
        return float(argv[0])
    except ValueError:
        return 0.0
