"""``shoal.manager.objectrefs.matching``: how networks, secrets and configs are named on the
command line (docker's order: exact ID, then name, then ID prefix)."""

from __future__ import annotations

import pytest
from shoal.manager import netobjects, secretrefs
from shoal.manager.objectrefs import matching
from shoal.proto import objects_pb2 as pb
from shoal.specs import SpecError


def secret(object_id: str, name: str) -> pb.Secret:
    made = pb.Secret(id=object_id)
    made.spec.annotations.name = name
    return made


ABC, ABD, NAMED_ABC = secret("abc1", "db"), secret("abd2", "web"), secret("x9", "abc1")


def test_an_id_beats_a_name_and_a_name_beats_a_prefix() -> None:
    assert matching([NAMED_ABC, ABC, ABD], "abc1") == [ABC]
    assert matching([ABC, ABD], "web") == [ABD]
    assert matching([ABC, ABD, secret("ab", "ab3")], "ab3") == [secret("ab", "ab3")]


def test_a_prefix_gives_every_match_and_an_empty_reference_none() -> None:
    assert matching([ABC, ABD], "ab") == [ABC, ABD]
    assert matching([ABC, ABD], "abd") == [ABD]
    assert matching([ABC, ABD], "") == []


def test_an_ambiguous_prefix_is_a_miss_for_networks_and_one_line_for_secrets() -> None:
    networks = [pb.Network(id="abc1"), pb.Network(id="abd2")]
    assert netobjects.find(networks, "ab") is None
    assert netobjects.find(networks, "abd") is networks[1]
    with pytest.raises(SpecError, match=r"^secret ab is ambiguous \(2 matches\)$"):
        secretrefs.find([ABC, ABD], "ab", "secret")
