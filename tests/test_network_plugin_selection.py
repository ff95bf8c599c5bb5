"""The network plugin is a cluster-wide choice: checked at ``swarm init`` (a plugin that cannot
be built stops it with one line, nothing initialised), recorded, and adopted by joining workers."""

from __future__ import annotations

import json
from collections.abc import Callable

from harness import ShoalNode

Factory = Callable[..., ShoalNode]


def test_network_plugin_is_checked_and_recorded_at_init(node_factory: Factory) -> None:
    node = node_factory().start()
    refused = node.cli("swarm", "init", "--advertise-addr", node.addr, "--plugin", "network=nosuch")
    assert refused.returncode != 0, refused
    assert refused.stderr.count("\n") == 1 and 'network plugin "nosuch"' in refused.stderr, refused.stderr
    assert node.info()["Swarm"] == "inactive"
    assert not (node.state_dir / "state.json").exists()

    node.ok("swarm", "init", "--advertise-addr", node.addr)
    assert json.loads((node.state_dir / "state.json").read_text())["plugins"]["network"] == "overlay"

    # a worker runs the swarm's network plugin too: it records it when it joins
    worker = node_factory(name="w1").start()
    worker.join(node)
    assert json.loads((worker.state_dir / "state.json").read_text())["plugins"]["network"] == "overlay"
