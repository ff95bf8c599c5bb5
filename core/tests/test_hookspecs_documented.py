"""Every hook spec is documented, in its docstring and in the plugin guide (as datasette checks).

A hook that plugin authors cannot find in the guide, or whose docstring does not say what it
takes and returns, is a hook nobody implements correctly; this keeps the two from drifting.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import shoal.hookspecs
from shoal.loader import factory_hook_name
from shoal.roles.base import ROLES

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugin-guide" / "README.md"
MARK = f"{shoal.hookspecs.PROJECT}_spec"


def hookspecs() -> dict[str, Callable[..., Any]]:
    return {
        name: func
        for name, func in inspect.getmembers(shoal.hookspecs, inspect.isfunction)
        if hasattr(func, MARK)
    }


def signature_text(func: Callable[..., Any]) -> str:
    return f"{func.__name__}({', '.join(inspect.signature(func).parameters)})"


def test_there_are_hookspecs_to_check() -> None:
    assert len(hookspecs()) >= len(ROLES) + 3


@pytest.mark.parametrize("name", sorted(hookspecs()))
def test_hookspec_docstring_says_what_it_takes_and_returns(name: str) -> None:
    doc = inspect.getdoc(hookspecs()[name]) or ""
    assert ":returns:" in doc or ":param" in doc, f"{name} needs :param/:returns: in its docstring"
    params = inspect.signature(hookspecs()[name]).parameters
    undocumented = [p for p in params if f":param {p}:" not in doc and p != "context"]
    assert not undocumented, f"{name}'s docstring does not describe {undocumented}"


@pytest.mark.parametrize("name", sorted(hookspecs()))
def test_hookspec_is_in_the_plugin_guide_with_its_arguments(name: str) -> None:
    assert signature_text(hookspecs()[name]) in GUIDE.read_text(), (
        f"docs/plugin-guide/README.md must mention {signature_text(hookspecs()[name])}"
    )


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_a_firstresult_factory_hook(role: str) -> None:
    spec = hookspecs().get(factory_hook_name(role))
    assert spec is not None, f"shoal.hookspecs lacks {factory_hook_name(role)}"
    assert getattr(spec, MARK)["firstresult"] is True
    assert list(inspect.signature(spec).parameters) == ["context"]


def test_call_all_hooks_are_not_firstresult() -> None:
    factories = {factory_hook_name(role) for role in ROLES}
    call_all = {name for name, func in hookspecs().items() if not getattr(func, MARK)["firstresult"]}
    assert call_all == set(hookspecs()) - factories
    assert {"shoal_cli_commands", "shoal_task_state_changed", "shoal_node_filters"} <= call_all
