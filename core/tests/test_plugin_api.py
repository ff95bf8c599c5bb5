"""``shoal.plugin`` is the whole public API for plugin authors, and the shipped plugins keep to it.

The shipped plugins are the examples third parties copy: if they reached into kernel modules,
so would every outside plugin, and the stability promise of ``shoal.plugin`` would cover
nothing. These tests keep the declared surface importable and the plugins inside it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import shoal.plugin
import shoal.roles

REPO = Path(__file__).resolve().parents[2]

#: Kernel modules a shipped plugin may import besides ``shoal.plugin`` and ``shoal.testing``.
#: Each is outside the stability promise (see the ``shoal.plugin`` docstring); an entry here
#: is a known debt, not a licence for new imports.
ALLOWED_PRIVATE_IMPORTS: dict[str, str] = {
    # Certificate parsing and chain checks: CA plugins (cfssl, internal) and transports (grpc,
    # memory) must read a node's identity exactly as the kernel does, so they share its code.
    "shoal.identity": "certificate helpers shared with the kernel",
    # Helpers for container-engine runtimes (port bindings, task files, exit watching, log
    # streaming, a thread bridge): shared by the docker and podman plugins.
    "shoal.runtimekit": "runtime helper kit",
}


def test_every_public_name_resolves() -> None:
    missing = [name for name in shoal.plugin.__all__ if not hasattr(shoal.plugin, name)]
    assert missing == []
    assert len(set(shoal.plugin.__all__)) == len(shoal.plugin.__all__)


def test_every_role_type_is_public() -> None:
    """A type added to a role module's exports must reach plugin authors too."""
    assert set(shoal.roles.__all__) <= set(shoal.plugin.__all__)


def shoal_imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every ``shoal`` or ``shoal.*`` module ``path`` imports, with its line number."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "shoal":
                yield from ((node.lineno, f"shoal.{alias.name}") for alias in node.names)
            elif node.module.startswith("shoal."):
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "shoal" or alias.name.startswith("shoal."):
                    yield node.lineno, alias.name


def allowed(module: str) -> bool:
    public = ("shoal.plugin", "shoal.testing", *ALLOWED_PRIVATE_IMPORTS)
    return any(module == prefix or module.startswith(prefix + ".") for prefix in public)


def private_imports(root: Path) -> list[str]:
    """``file:line module`` for every kernel import outside the public API under ``root``."""
    sources = [*root.glob("plugins/*/src/**/*.py"), *root.glob("tests/thirdparty/*/src/**/*.py")]
    assert sources, f"no plugin sources under {root}"
    return [
        f"{path.relative_to(root)}:{line} {module}"
        for path in sorted(sources)
        for line, module in shoal_imports(path)
        if not allowed(module)
    ]


def test_shipped_plugins_import_only_the_public_api() -> None:
    assert private_imports(REPO) == []
