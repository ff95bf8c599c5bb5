"""``shoal service create --detach ...`` on a Unix socket, run without importing click.

The CLI is a new Python process per command, and at N = 4 replicas on podman the engine's own
floor leaves about 40 ms for everything shoal adds (issue 18 item 4); importing click alone
(with ``typing``, ``inspect``, ``uuid``, ``datetime``) and building the command tree cost more
than that. So the entry point first tries this: a parser for exactly the command line click
would accept for a detached create, built from the same option tables (``service_flags``)
and following click's parsing rules (long options with ``=VALUE`` or a separate value,
clustered short flags, ``-eVALUE``, ``--``, the first positional ending the options, the last
value of a single-valued option winning, docker's ``--read-only=false``) and click's order of
the request's parameters (those given first, in the order given, then the others as
declared), so that the daemon receives the same request line, byte for byte.

Anything else (help, a typo, a missing value, a context or TLS option, no ``-H``/``SHOAL_HOST``
naming a Unix socket, ``--env-file``, ``--with-registry-auth``, a create that waits, shell
completion) returns False before anything is sent, and click does what it always did.
``test_cli_fastpath`` compares the two paths' requests, outputs and exit codes.

The request goes out, and its answer is read, through the C halves of ``json`` and ``socket``
(``_json``, ``_socket``): the Python modules import ``re``, ``enum``, ``selectors`` and
``functools``, and with ``shoal.client`` they were about half of this path's CPU (the whole
process against a daemon, alternating, 40 runs each at load 12: CPU 30.5 ms before, 14.7 ms
after, minimum of each). The bytes sent are ``json.dumps``'s (the same C encoder, with its settings) and the
answer is read as ``json.loads`` reads it. Whatever is not the plain case goes to
``shoal.client`` as before: a socket that cannot be connected to (nothing was sent: the client
connects again and words the error), a connection that fails after the request went
(``Client.failure``), an error answer, an answer that does not parse. ``_json`` is CPython's
private module: before anything is sent, ``_light_json`` checks that it is there and encodes and
scans a sample as this path expects, and if not (another Python, another version) the command
goes to click, which sends the request once through ``shoal.client``.
"""

from __future__ import annotations

import os
import sys

from shoal.cli.service_flags import FALSE, FLAG, LIST, TRUE, create_params, create_spec

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs ~2 ms here
if TYPE_CHECKING:
    from typing import Any

#: The root group's options this path takes (any other one is left to click).
_ROOT_OPTIONS = {"-H": "host", "--host": "host"}
#: click's shell completion is asked for through this variable (``_{PROG}_COMPLETE``).
_COMPLETE_VAR = "_SHOAL_COMPLETE"


class _NotHere(Exception):
    """The command line is not one this path runs: click takes it (nothing was sent)."""


class _Parsed:
    """One command level's options as click's parser leaves them: the values by parameter
    name, the parameters in the order they were first given, and the arguments after them."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.order: list[str] = []
        self.rest: list[str] = []


class _Options:
    """A command's option table: flag -> (parameter name, kind, flag constant)."""

    def __init__(self, table: dict[str, tuple[str, str, object]], docker_booleans: bool) -> None:
        self.table = table
        #: ``DockerFlagsCommand``'s parser: ``--read-only=false`` is ``--no-read-only``.
        self.docker_booleans = docker_booleans

    def parse(self, args: list[str]) -> _Parsed:
        """click's ``_OptionParser`` for options that are strings or flags, one value each,
        with interspersed arguments off; raises ``_NotHere`` where click would report an
        error (or show help, which is no option here)."""
        parsed, rargs = _Parsed(), list(args)
        while rargs:
            arg = rargs.pop(0)
            if arg == "--":
                break
            if arg[:1] == "-" and len(arg) > 1:
                self._option(arg, rargs, parsed)
            else:
                rargs.insert(0, arg)
                break
        parsed.rest = rargs
        return parsed

    def _option(self, arg: str, rargs: list[str], parsed: _Parsed) -> None:
        opt, sep, explicit = arg.partition("=")
        if opt.startswith("--") and opt in self.table:
            self._long(opt, explicit if sep else None, rargs, parsed)
        elif arg[:2] != "--":
            self._short(arg, rargs, parsed)
        else:
            raise _NotHere(arg)

    def _long(self, opt: str, explicit: str | None, rargs: list[str], parsed: _Parsed) -> None:
        twin = f"--no-{opt[2:]}"
        if explicit is not None and self.docker_booleans and twin in self.table:
            if explicit in FALSE:
                opt, explicit = twin, None
            elif explicit in TRUE:
                explicit = None
            else:
                raise _NotHere(opt)
        name, kind, const = self.table[opt]
        if kind == FLAG:
            if explicit is not None:
                raise _NotHere(opt)
            _store(parsed, name, kind, const)
            return
        if explicit is not None:
            rargs.insert(0, explicit)
        _store(parsed, name, kind, _value(opt, rargs))

    def _short(self, arg: str, rargs: list[str], parsed: _Parsed) -> None:
        for i, ch in enumerate(arg[1:], 2):
            opt = f"{arg[0]}{ch}"
            if opt not in self.table:
                raise _NotHere(opt)
            name, kind, const = self.table[opt]
            if kind == FLAG:
                _store(parsed, name, kind, const)
                continue
            if i < len(arg):  # ``-eKEY=VALUE``: the rest of the word is the value
                rargs.insert(0, arg[i:])
            _store(parsed, name, kind, _value(opt, rargs))
            return


def _value(opt: str, rargs: list[str]) -> str:
    """The next word, whatever it looks like (click's rule for a one-value option)."""
    if not rargs:
        raise _NotHere(opt)
    return rargs.pop(0)


def _store(parsed: _Parsed, name: str, kind: str, value: object) -> None:
    parsed.order.append(name)
    if kind == LIST:
        parsed.values.setdefault(name, []).append(value)
    else:
        parsed.values[name] = value


def _create_options() -> tuple[_Options, list[tuple[str, object]]]:
    """``service create``'s option table, and its parameters in declaration order with their
    defaults."""
    table: dict[str, tuple[str, str, object]] = {}
    declared: list[tuple[str, object]] = []
    for name, flags, off_flags, kind, default in create_spec():
        declared.append((name, default))
        for flag in flags:
            table[flag] = (name, kind, True)
        for flag in off_flags:
            table[flag] = (name, kind, False)
    return _Options(table, docker_booleans=True), declared


def _in_click_order(parsed: _Parsed, declared: list[tuple[str, object]]) -> dict[str, Any]:
    """Every parameter's value, ordered as click fills ``ctx.params``: those given, in the
    order first given, then the others in declaration order (``iter_params_for_processing``)."""
    first: dict[str, int] = {}
    for position, name in enumerate(parsed.order):
        first.setdefault(name, position)
    never = len(parsed.order)
    ordered = sorted(declared, key=lambda item: first.get(item[0], never))
    values: dict[str, Any] = {}
    for name, default in ordered:
        value = parsed.values.get(name, default)
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def detached_create(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    """``(socket path, service.create's parameters)`` for a command line this path runs,
    else None. Sends nothing."""
    if _COMPLETE_VAR in os.environ:
        return None
    try:
        root = _Options({flag: (name, "value", None) for flag, name in _ROOT_OPTIONS.items()}, False)
        top = root.parse(argv)
        if top.rest[:2] != ["service", "create"]:
            return None
        options, declared = _create_options()
        create = options.parse(top.rest[2:])
    except _NotHere:
        return None
    host = top.values.get("host") or os.environ.get("SHOAL_HOST") or ""
    if not (host.startswith("unix://") or host.startswith("/")) or not create.rest:
        return None
    values = _in_click_order(create, declared)
    detach = values.pop("detach")
    del values["quiet"]  # like ``detach``, an argument of its own to click's callback
    params = create_params(create.rest[0], create.rest[1:], values)
    if not detach or "env_file" in params or params.pop("with_registry_auth", False):
        return None
    return host.removeprefix("unix://"), params


def run_detached_create(argv: list[str]) -> bool:
    """Run ``argv`` if it is a detached ``service create`` this path takes (what click would
    do: the service's ID on stdout, or one error line and exit 1 or 2); False, having done
    nothing, for any other command line."""
    found = detached_create(argv)
    if found is None or not _light_json():
        return False
    path, params = found
    try:
        try:
            result = _create(path, params)
        except Exception as exc:
            client = sys.modules.get("shoal.client")  # a ClientError was made there, if one is raised
            if client is None or not isinstance(exc, client.ClientError):
                raise
            from shoal.cli.common import INPUT_ERRORS
            from shoal.cli.errors import fail

            fail(exc.message, 2 if exc.code in INPUT_ERRORS else 1)
        _echo(result["ID"])
    except (EOFError, KeyboardInterrupt):
        _aborted()
    except OSError as exc:
        _pipe_closed(exc)
    return True


#: ``Client``'s default timeout, for the connection of the light path too.
_TIMEOUT = 120.0
_METHOD = "service.create"


def _create(path: str, params: dict[str, Any]) -> Any:
    """``service.create``'s result, as ``Client(...).call`` returns it (or raises)."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(_TIMEOUT)
        try:
            sock.connect(path)
        except OSError:  # nothing sent: the client connects again and says why it cannot
            from shoal.client import Client, Endpoint

            return Client(Endpoint(unix_path=path)).call(_METHOD, **params)
        try:
            return _answered(sock, _request(params))
        except OSError as exc:
            from shoal.client import Client, Endpoint

            failure = Client(Endpoint(unix_path=path)).failure(_METHOD, exc)
            if failure is None:
                raise
            raise failure from None
    finally:
        sock.close()


#: ``_light_json``'s sample, and the bytes ``json.dumps`` makes of it: every kind of value a
#: request holds, a non-ASCII string and the separators.
_SAMPLE = {"k\u00e9": ["v", 1, 2.5, None, True, False, {}]}
_SAMPLE_JSON = '{"k\\u00e9": ["v", 1, 2.5, null, true, false, {}]}'


def _light_json() -> bool:
    """Whether ``_json`` (CPython's private C half of ``json``) and ``_socket`` are here and
    behave as ``_request`` and ``_parsed`` use them: the sample encodes to ``json.dumps``'s text
    and scans back. Checked before anything is sent, so that on a Python without them, or with
    other signatures, click runs the create instead (one request, no traceback); a few
    microseconds."""
    try:
        import _socket  # noqa: F401  # ``_create`` connects through it
        from _json import make_scanner

        text = "".join(_encoder()(_SAMPLE, 0))
        scanned = make_scanner(_Context)(f"{text} ", 0)  # type: ignore[arg-type]  # duck-typed
    except Exception:  # missing, renamed, or called otherwise in this Python
        return False
    return text == _SAMPLE_JSON and scanned == (_SAMPLE, len(text))


def _encoder() -> Any:
    """``json``'s C encoder with ``json.dumps``'s settings (circular check, ASCII, ``", "`` and
    ``": "``, NaN allowed, keys unsorted)."""
    from _json import encode_basestring_ascii, make_encoder

    def refuse(value: object) -> object:  # ``JSONEncoder.default``: what JSON has no type for
        raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")

    return make_encoder({}, refuse, encode_basestring_ascii, None, ": ", ", ", False, False, True)


def _request(params: dict[str, Any]) -> bytes:
    """``json.dumps({"method": ..., "params": params})`` and a newline, as ``Client`` sends it:
    ``_encoder``'s text (``_light_json`` has checked it is ``json.dumps``'s)."""
    return "".join(_encoder()({"method": _METHOD, "params": params}, 0)).encode() + b"\n"


def _answered(sock: Any, payload: bytes) -> Any:
    """Send ``payload`` and read answer lines as ``Client.call`` does: the first with a
    result gives it (its warning on stderr), an error line is raised, others are skipped."""
    try:
        sock.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before it read everything (too large): its answer line says why
    for raw in _lines(sock):
        message = _parsed(raw)
        if "error" in message:
            from shoal.client import _answer

            _answer(raw)  # raises it as ``ClientError``, as the client does
        if "result" in message:
            if message.get("warning"):
                print(f"Warning: {message['warning']}", file=sys.stderr)
            return message["result"]
    from shoal.client import ClientError

    raise ClientError("UNAVAILABLE", "the shoal daemon closed the connection without an answer")


def _lines(sock: Any) -> Any:
    """The lines the daemon sends (each with its newline, the last one maybe without)."""
    pending = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            if pending:
                yield pending
            return
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            line, pending = pending[: end + 1], pending[end + 1 :]
            yield line


class _Context:
    """What ``json``'s C scanner reads from a ``JSONDecoder``: ``json.loads``'s defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


def _parsed(raw: bytes) -> dict[str, Any]:
    """``json.loads(raw)`` of one of the daemon's lines: ``json``'s C scanner for an object in
    UTF-8 with only whitespace after it, ``json`` itself for anything else (and its error)."""
    if raw[:1] == b"{":
        from _json import make_scanner

        try:
            text = raw.decode("utf-8", "surrogatepass")
            message, end = make_scanner(_Context)(text, 0)  # type: ignore[arg-type]  # duck-typed
        except (UnicodeDecodeError, StopIteration):
            pass
        else:
            if not text[end:].strip(" \t\n\r"):
                return message  # type: ignore[no-any-return]
    import json

    loaded: dict[str, Any] = json.loads(raw)
    return loaded


def _echo(text: object) -> None:
    """``click.echo(text)``: a plain ASCII ID is written as is; anything else (ANSI codes to
    strip on a pipe, not a string) goes through click."""
    if isinstance(text, str) and text.isascii() and text.isprintable() and sys.stdout is not None:
        sys.stdout.write(f"{text}\n")
        sys.stdout.flush()
        return
    import click

    click.echo(text)


def _aborted() -> None:
    """What click does on ^C: a new line, then ``shoal``'s ``Error: aborted``, exit 1."""
    from shoal.cli.errors import fail

    print(file=sys.stderr)
    fail("aborted", 1)


def _pipe_closed(exc: OSError) -> None:
    """click's handling of a closed stdout (``shoal ... | true``): exit 1 quietly."""
    import errno

    if exc.errno != errno.EPIPE:
        raise exc
    from click.utils import _PacifyFlushWrapper  # what click's own main uses here

    sys.stdout = _PacifyFlushWrapper(sys.stdout)
    sys.stderr = _PacifyFlushWrapper(sys.stderr)
    sys.exit(1)
