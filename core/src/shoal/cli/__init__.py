"""The ``shoal`` command line: click groups mirroring docker's command tree.

``main`` is the entry point: a detached ``service create`` on a Unix socket runs there without
click (``fastpath``); every other command goes to ``root``'s group, which imports each command
group's module (``service_cmd``, ``node_cmd``, ``swarm_cmd``, ``plugin_cmd`` and the others) when
it is used; ``errors`` turns known failures into one-line messages and exit status 2.
"""
