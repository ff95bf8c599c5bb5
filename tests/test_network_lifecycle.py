"""The daemon drives the swarm's network plugin through a node's life: ``start`` with the node's
ID and advertise address when its swarm part starts (init, join, daemon restart), ``close``
when the daemon stops (the data path stays), ``cleanup`` then ``close`` when it leaves.

The plugin is a real distribution in a temporary site directory (as in test_plugin_failures):
the overlay provider, recording each call in a file the test reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from harness import ShoalNode, wait_until

Factory = Callable[..., ShoalNode]

RECORDER = """
import os
from shoal import hookimpl
from shoal_network_overlay import OverlayNetwork

def note(line):
    with open(os.environ["SHOAL_TEST_NETWORK_LOG"], "a") as log:
        log.write(line + "\\n")

class Recorder(OverlayNetwork):
    async def start(self, node):
        note(f"start {node.node_id} {node.advertise_ip}")
    async def cleanup(self):
        note("cleanup")
    async def close(self):
        note("close")

PROVIDER_CLASS = Recorder

@hookimpl
def shoal_network_provider(context):
    return Recorder()
"""


def recorder_site(site: Path) -> None:
    module = "shoal_test_network_recorder"
    site.mkdir(parents=True)
    (site / f"{module}.py").write_text(RECORDER)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shoal-test-network-recorder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[shoal.network]\nrecorder = {module}\n")


def test_network_plugin_started_closed_and_cleaned_up(node_factory: Factory, tmp_path: Path) -> None:
    site, log = tmp_path / "site", tmp_path / "network.log"
    recorder_site(site)
    pythonpath = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {"PYTHONPATH": pythonpath, "SHOAL_TEST_NETWORK_LOG": str(log), "PYTHONDONTWRITEBYTECODE": "1"}

    def calls() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    node = node_factory(env=env).start()
    node.ok("swarm", "init", "--advertise-addr", node.addr, "--plugin", "network=recorder")
    node_id = node.node_id()
    started = f"start {node_id} 127.0.0.1"
    assert [c for c in calls() if c.startswith("start")] == [started]  # the check builds only

    node.stop()
    assert calls()[-1] == "close"  # a stopping daemon leaves the data path in place
    node.start()
    wait_until(lambda: calls()[-1] == started, 20, what="the network started again after a restart")

    node.ok("swarm", "leave", "--force")
    assert calls()[-2:] == ["cleanup", "close"]
    assert "cleanup" not in calls()[:-2]
