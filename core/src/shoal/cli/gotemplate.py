"""The part of Go's ``text/template`` that ``docker ... inspect --format`` users write.

Docker runs ``--format`` through Go templates over the inspected object; Swarm users' scripts
carry lines such as ``{{.Spec.Name}}``, ``{{json .Spec.Mode}}``,
``{{range .Spec.TaskTemplate.ContainerSpec.Env}}{{.}} {{end}}``,
``{{index .Spec.Labels "team"}}`` or ``{{if eq .Spec.Role "worker"}}...{{end}}``. This module
runs that subset over the JSON-shaped dicts of ``shoal.dockershapes``:

- field paths from ``.`` or a variable (``$``, ``$v``), string/number/bool literals;
- pipelines (``{{.Spec.Name | upper}}``), ``{{- ... -}}`` whitespace trimming;
- ``if``/``else if``/``else``/``end``, ``range`` (with ``$v :=`` or ``$k, $v :=``), ``with``;
- docker's functions ``json``, ``join``, ``split``, ``lower``, ``upper``, ``title``,
  ``truncate``, ``pad``, ``println``, and Go's ``index``, ``len``, ``print``, ``printf``,
  ``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge``, ``not``, ``and``, ``or``.

A missing map key prints ``<no value>`` as Go does for docker's map-shaped inspect output; a
template that does not parse, or names an unknown function, raises ``TemplateError`` with one
line saying where.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

NO_VALUE = "<no value>"


class TemplateError(Exception):
    """A template that cannot be parsed or run: the message is one line for the user."""


# ---------------------------------------------------------------------------- values


def go_string(value: Any) -> str:
    """How Go's ``fmt.Print`` shows a JSON-decoded value (what ``{{.X}}`` prints)."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, list):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_string(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    """Go's ``if``: false, 0, nil, and empty strings, lists and maps are false."""
    return bool(value) if value is not None else False


def _printf(fmt: str, *args: Any) -> str:
    values = iter(args)

    def verb(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        value = next(values, None)
        return str(json.dumps(value)) if match.group(1) == "q" else go_string(value)

    return re.sub(r"%([svdqt])|%%", verb, fmt)


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
            value = value[key]
        elif isinstance(value, list):
            raise TemplateError(f"error calling index: index out of range: {key}")
        else:
            return None
    return value


def _truncate(text: Any, length: int) -> str:
    return str(text)[:length]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False),
    "join": lambda items, sep: sep.join(go_string(i) for i in items or []),
    "split": lambda text, sep: str(text).split(sep),
    "lower": lambda text: str(text).lower(),
    "upper": lambda text: str(text).upper(),
    "title": lambda text: str(text).title(),
    "truncate": _truncate,
    "pad": lambda text, left, right: " " * left + go_string(text) + " " * right,
    "println": lambda *args: " ".join(go_string(a) for a in args) + "\n",
    "print": lambda *args: "".join(go_string(a) for a in args),
    "printf": _printf,
    "index": _index,
    "len": lambda v: len(v) if v is not None else 0,
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "not": lambda v: not _truthy(v),
    "and": lambda *vs: next((v for v in vs if not _truthy(v)), vs[-1]),
    "or": lambda *vs: next((v for v in vs if _truthy(v)), vs[-1]),
}


# ---------------------------------------------------------------------------- parsing

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<declare>:=)
      | (?P<pipe>\|)
      | (?P<comma>,)
      | (?P<word>[$.]?[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*|\.)
    )""",
    re.VERBOSE,
)


@dataclass
class Arg:
    """One operand: a path from dot or a variable, a literal, or a function name."""

    kind: str  # "path", "var", "literal", "func"
    value: Any
    path: tuple[str, ...] = ()


@dataclass
class Pipeline:
    commands: list[list[Arg]]
    variables: list[str] = field(default_factory=list)


@dataclass
class Node:
    kind: str  # "text", "action", "if", "range", "with"
    text: str = ""
    pipeline: Pipeline | None = None
    body: list[Node] = field(default_factory=list)
    otherwise: list[Node] = field(default_factory=list)


def _tokens(source: str) -> Iterator[tuple[str, str]]:
    pos = 0
    source = source.rstrip()
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None or match.end() == pos:
            raise TemplateError(f'unexpected "{source[pos:].strip()[:20]}" in action')
        pos = match.end()
        kind = match.lastgroup
        assert kind is not None
        yield kind, match.group(kind)


def _operand(kind: str, text: str) -> Arg:
    if kind == "string":
        return Arg("literal", json.loads(text) if text.startswith('"') else text[1:-1])
    if kind == "number":
        return Arg("literal", float(text) if "." in text else int(text))
    if text in ("true", "false"):
        return Arg("literal", text == "true")
    if text in ("nil",):
        return Arg("literal", None)
    if text.startswith("."):
        return Arg("path", None, tuple(p for p in text.split(".") if p))
    if text.startswith("$"):
        name, *rest = text.split(".")
        return Arg("var", name, tuple(rest))
    if text not in FUNCTIONS:
        raise TemplateError(f'function "{text}" not defined')
    return Arg("func", text)


def _pipeline(source: str) -> Pipeline:
    tokens = list(_tokens(source))
    variables: list[str] = []
    if any(kind == "declare" for kind, _ in tokens):
        split = next(i for i, (kind, _) in enumerate(tokens) if kind == "declare")
        variables = [text for kind, text in tokens[:split] if kind == "word"]
        if not variables or not all(v.startswith("$") for v in variables):
            raise TemplateError("variables must be declared as $name :=")
        tokens = tokens[split + 1 :]
    commands: list[list[Arg]] = [[]]
    for kind, text in tokens:
        if kind == "pipe":
            commands.append([])
        elif kind in ("comma", "declare"):
            raise TemplateError(f'unexpected "{text}" in action')
        else:
            commands[-1].append(_operand(kind, text))
    if any(not command for command in commands):
        raise TemplateError("missing value for command")
    return Pipeline(commands, variables)


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


def parse(template: str) -> list[Node]:
    """The template's tree; ``TemplateError`` when it does not parse."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if match.group(1):
            text = text.rstrip()
        if pieces and pieces[-1][0] == "trim-next":
            pieces.pop()
            text = text.lstrip()
        pieces.append(("text", text))
        pieces.append(("action", match.group(2).strip()))
        if match.group(3):
            pieces.append(("trim-next", ""))
        pos = match.end()
    rest = template[pos:]
    if "{{" in rest:
        raise TemplateError('unclosed action (a "{{" without "}}")')
    if pieces and pieces[-1][0] == "trim-next":
        pieces.pop()
        rest = rest.lstrip()
    pieces.append(("text", rest))
    nodes, _ = _block(pieces, 0, top=True)
    return nodes


def _block(pieces: list[tuple[str, str]], index: int, *, top: bool = False) -> tuple[list[Node], int]:
    """Nodes from ``pieces[index]`` up to the ``end``/``else`` closing this block (its index)."""
    nodes: list[Node] = []
    while index < len(pieces):
        kind, text = pieces[index]
        if kind == "trim-next":
            index += 1
            continue
        if kind == "text":
            if text:
                nodes.append(Node("text", text))
            index += 1
            continue
        word = text.split(None, 1)[0] if text else ""
        if word in ("end", "else"):
            if top:
                raise TemplateError(f"unexpected {{{{{word}}}}}")
            return nodes, index
        if text.startswith("/*"):
            index += 1
            continue
        if word in ("if", "range", "with"):
            node, index = _control(pieces, index, word, text[len(word) :])
            nodes.append(node)
            continue
        if not text:
            raise TemplateError("missing value for command")
        nodes.append(Node("action", pipeline=_pipeline(text)))
        index += 1
    if not top:
        raise TemplateError("unexpected EOF (an {{if}}, {{range}} or {{with}} without {{end}})")
    return nodes, index


def _control(pieces: list[tuple[str, str]], index: int, word: str, source: str) -> tuple[Node, int]:
    node = Node(word, pipeline=_pipeline(source))
    node.body, index = _block(pieces, index + 1)
    closing = pieces[index][1]
    if closing.startswith("else"):
        chained = closing[len("else") :].strip()
        if chained.startswith("if ") and word == "if":
            inner, index = _control(pieces, index, "if", chained[len("if") :])
            node.otherwise = [inner]
            return node, index  # the chained if consumed the shared {{end}}
        node.otherwise, index = _block(pieces, index + 1)
        if pieces[index][1] != "end":
            raise TemplateError("expected {{end}} after {{else}}")
    return node, index + 1


# ---------------------------------------------------------------------------- execution


@dataclass
class _Scope:
    dot: Any
    variables: dict[str, Any]


def _walk(value: Any, path: tuple[str, ...], shown: str) -> Any:
    for name in path:
        if isinstance(value, dict):
            value = value.get(name)
        elif value is None:
            raise TemplateError(f"nil pointer evaluating {shown}")
        else:
            raise TemplateError(f"can't evaluate field {name} in {shown}")
    return value


def _value(arg: Arg, scope: _Scope) -> Any:
    if arg.kind == "literal":
        return arg.value
    if arg.kind == "path":
        return _walk(scope.dot, arg.path, "." + ".".join(arg.path))
    if arg.kind == "var":
        if arg.value not in scope.variables:
            raise TemplateError(f"undefined variable: {arg.value}")
        return _walk(scope.variables[arg.value], arg.path, ".".join([arg.value, *arg.path]))
    return FUNCTIONS[arg.value]()


def _run_pipeline(pipeline: Pipeline, scope: _Scope) -> Any:
    result: Any = None
    for position, command in enumerate(pipeline.commands):
        head, *args = command
        values = [_value(a, scope) for a in args]
        if position:
            values.append(result)
        if head.kind == "func":
            try:
                result = FUNCTIONS[head.value](*values)
            except TemplateError:
                raise
            except (TypeError, ValueError, AttributeError) as exc:
                raise TemplateError(f"error calling {head.value}: {exc}") from None
        elif values:
            raise TemplateError(f"can't give argument to non-function {head.kind} value")
        else:
            result = _value(head, scope)
    return result


def _execute(nodes: list[Node], scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
            continue
        assert node.pipeline is not None
        value = _run_pipeline(node.pipeline, scope)
        if node.kind == "action":
            if node.pipeline.variables:
                scope.variables[node.pipeline.variables[0]] = value
            else:
                out.append(go_string(value))
        elif node.kind == "if":
            _execute(node.body if _truthy(value) else node.otherwise, scope, out)
        elif node.kind == "with":
            if _truthy(value):
                _execute(node.body, _Scope(value, dict(scope.variables)), out)
            else:
                _execute(node.otherwise, scope, out)
        else:
            _range(node, value, scope, out)


def _range(node: Node, value: Any, scope: _Scope, out: list[str]) -> None:
    assert node.pipeline is not None
    if isinstance(value, dict):
        items = [(k, value[k]) for k in sorted(value)]
    elif isinstance(value, list):
        items = list(enumerate(value))
    elif value is None:
        items = []
    else:
        raise TemplateError(f"range can't iterate over {go_string(value)}")
    if not items:
        _execute(node.otherwise, scope, out)
        return
    names = node.pipeline.variables
    for key, item in items:
        variables = dict(scope.variables)
        if len(names) == 1:
            variables[names[0]] = item
        elif len(names) == 2:
            variables[names[0]], variables[names[1]] = key, item
        _execute(node.body, _Scope(item, variables), out)


def render(template: str | list[Node], data: Any) -> str:
    """``template`` run over ``data`` (``TemplateError`` with one line when it cannot be)."""
    nodes = parse(template) if isinstance(template, str) else template
    out: list[str] = []
    _execute(nodes, _Scope(data, {"$": data}), out)
    return "".join(out)
