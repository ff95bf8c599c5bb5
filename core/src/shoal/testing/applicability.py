"""Which of a conformance suite's checks apply to a provider, decided when its class is made.

A check that cannot apply to a provider (a feature it does not declare, an optional method it
does not have) is not collected at all rather than skipped at run time: a CI run then shows
no skips, and a skip that appears means something really was not checked. The subclass says
what applies in class attributes (``declared_features``, ``has_find``,
``uses_cluster_material``); the suite sets the checks that do not apply to None on that
subclass (pytest collects nothing named by None) and checks at run time, in a test of its
own, that what the subclass says is what the provider really does.
"""

from __future__ import annotations

from typing import Any


def declared(cls: type, name: str, kind: type, example: str) -> Any:
    """The class attribute ``name`` a suite's subclass must set, checked to be a ``kind``.

    :raises TypeError: one line naming the class and what to set, when it is missing or of
        another type (pytest reports it as a collection error: a failure, never a skip).
    """
    value = getattr(cls, name, None)
    if not isinstance(value, kind):
        raise TypeError(
            f"{cls.__qualname__} must set the class attribute {name} (for example {example}): "
            "the conformance suite collects the checks that apply to your provider from it"
        )
    return value


def collect_only_if(cls: type, suite: type, test_name: str, applies: bool) -> None:
    """Have pytest collect the suite's test ``test_name`` on ``cls`` only when it applies.

    A subclass of a subclass that applies again gets the suite's test back (its parent may
    have set it to None); one that overrides the test itself keeps its override.
    """
    if test_name in cls.__dict__:
        return
    if not applies:
        setattr(cls, test_name, None)
    elif getattr(cls, test_name) is None:
        setattr(cls, test_name, getattr(suite, test_name))
