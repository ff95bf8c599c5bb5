"""``--external-ca protocol=X`` picks the CA plugin whose provider class declares X.

Logic only: the installed CA plugins are ``DeclaredPlugin`` rows built here (what
``shoal.loader.declared_plugins`` returns); ``tests/test_plugin_failures.py`` runs the real
daemon, and ``test_loader.py`` reads real declarations from installed distributions.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
from shoal import externalca
from shoal.loader import DeclaredPlugin, PluginError
from shoal.roles.ca import ExternalCA, external_ca_protocols
from shoal.specs import SpecError


class SignsItself:
    role: ClassVar[str] = "ca"
    api_version: ClassVar[int] = 2


class Cfssl(SignsItself):
    external_ca_protocols: ClassVar[tuple[str, ...]] = ("cfssl",)


class Acme(SignsItself):
    external_ca_protocols: ClassVar[tuple[str, ...]] = ("acme", "cfssl")


def plugin(name: str, cls: type | None, error: str = "") -> DeclaredPlugin:
    return DeclaredPlugin(name, f'ca plugin "{name}" (distribution shoal-ca-{name} 1.0)', cls, error)


def cas(*protocols: str) -> list[ExternalCA]:
    return [ExternalCA(protocol=p, url=f"https://{p}.example:8888/sign") for p in protocols]


INTERNAL = plugin("internal", SignsItself)
CFSSL = plugin("cfssl", Cfssl)
ACME = plugin("acme", Acme)


def test_the_plugin_declaring_the_protocol_is_chosen() -> None:
    assert externalca.choose_ca_plugin(cas("cfssl"), [CFSSL, INTERNAL]) == "cfssl"
    assert externalca.choose_ca_plugin(cas("acme"), [ACME, CFSSL, INTERNAL]) == "acme"
    # Several flags: the plugin must serve every protocol given.
    assert externalca.choose_ca_plugin(cas("cfssl", "acme"), [ACME, CFSSL, INTERNAL]) == "acme"


def test_no_plugin_serves_the_protocol() -> None:
    broken = plugin("hsm", None, "failed to import: ModuleNotFoundError: No module named 'pkcs11'")
    with pytest.raises(PluginError) as err:
        externalca.choose_ca_plugin(cas("nope"), [CFSSL, broken, INTERNAL])
    assert str(err.value) == (
        "--external-ca protocol=nope: no installed CA plugin serves it; installed CA plugins serve: "
        'cfssl (plugin "cfssl"); unusable CA plugins: "hsm" (failed to import: ModuleNotFoundError: '
        "No module named 'pkcs11')"
    )
    with pytest.raises(PluginError) as err:
        externalca.choose_ca_plugin(cas("cfssl", "acme"), [CFSSL, INTERNAL])
    assert str(err.value) == (
        "--external-ca protocol=cfssl and --external-ca protocol=acme: no installed CA plugin serves "
        'them all; installed CA plugins serve: cfssl (plugin "cfssl")'
    )
    with pytest.raises(PluginError) as err:
        externalca.choose_ca_plugin(cas("cfssl"), [INTERNAL])
    assert str(err.value) == (
        "--external-ca protocol=cfssl: no installed CA plugin serves it; no installed CA plugin serves "
        "any --external-ca protocol"
    )


def test_two_plugins_serving_the_protocol_need_a_choice() -> None:
    with pytest.raises(PluginError) as err:
        externalca.choose_ca_plugin(cas("cfssl"), [ACME, CFSSL])
    assert str(err.value) == (
        '--external-ca protocol=cfssl: several installed CA plugins serve it ("acme", "cfssl"); '
        "choose one with --plugin ca=NAME"
    )
    assert externalca.choose_ca_plugin(cas("cfssl"), [ACME, CFSSL], requested="cfssl") == "cfssl"


def test_a_requested_plugin_must_serve_the_protocol() -> None:
    with pytest.raises(PluginError) as err:
        externalca.choose_ca_plugin(cas("cfssl"), [CFSSL, INTERNAL], requested="internal")
    assert str(err.value) == (
        '--external-ca protocol=cfssl: the ca plugin "internal" (distribution shoal-ca-internal 1.0) '
        "does not serve it (it serves no protocol: it signs by itself); installed CA plugins serve: "
        'cfssl (plugin "cfssl")'
    )
    # Unknown or broken: left to the loader, which has its own line for those.
    assert externalca.choose_ca_plugin(cas("cfssl"), [CFSSL], requested="gone") == "gone"


def test_swarm_update_checks_the_swarms_ca_plugin() -> None:
    externalca.check_served(cas("cfssl"), Cfssl, "cfssl")
    with pytest.raises(SpecError) as err:
        externalca.check_served(cas("acme"), Cfssl, "cfssl")
    assert str(err.value) == (
        '--external-ca protocol=acme: this swarm\'s CA plugin "cfssl" (chosen at swarm init) does not '
        "serve it; it serves cfssl"
    )
    with pytest.raises(SpecError) as err:
        externalca.check_served(cas("cfssl"), SignsItself, "internal")
    assert str(err.value).endswith("it serves no --external-ca protocol (it signs with the cluster root)")


def test_the_flag_names_no_protocol_list() -> None:
    """The kernel checks only the flag's shape; which protocols exist is the plugins' business."""
    assert externalca.parse_flag("protocol=acme,url=https://ca:1/x")["protocol"] == "acme"
    with pytest.raises(SpecError, match="protocol=NAME is missing"):
        externalca.parse_flag("url=https://ca:1/x")


@pytest.mark.parametrize(
    "declared",
    ["cfssl", ("",), ("two words",), ("a,b",), (1,), None],
    ids=["str", "empty", "space", "comma", "int", "none"],
)
def test_malformed_declarations_are_refused(declared: object) -> None:
    bad = type("Bad", (SignsItself,), {"external_ca_protocols": declared})
    with pytest.raises(TypeError, match="external_ca_protocols"):
        external_ca_protocols(bad)


def test_the_cfssl_plugin_declares_cfssl() -> None:
    from shoal_ca_cfssl.ca import CfsslCA
    from shoal_ca_internal.ca import InternalCA

    assert external_ca_protocols(CfsslCA) == ("cfssl",)
    assert external_ca_protocols(InternalCA) == ()
