"""Hollow nodes: many worker nodes in one process, for testing the managers at scale.

A hollow node is a real worker as the managers see it: it joins with the worker token (its own
key and CSR, the root checked against the token's digest), holds its own certificate, opens its
own dispatcher session over mutual TLS and runs the real agent code (``shoal.agent``: session,
heartbeats, assignments, task controllers, status batches). Only what lies under the agent is
hollow: its runtime is the ``fake`` plugin (containers as in-memory state) and it has no
network data path, no local API and no task-log server. Kubernetes' kubemark does the same
with hollow kubelets.

``join.py`` gets a node its certificate, ``node.py`` runs one node, ``fleet.py`` runs many on
one event loop (and spreads them over processes); ``shoal hollow`` is the command.
"""
