"""The default bound on a node's concurrent engine operations, apart from the gate itself.

Its own module so that the CLI can show it as ``--max-concurrent-engine-calls``' default
without importing the gate and the runtime contract (protobuf) on every command's start.
"""

#: Concurrent engine operations per node when the daemon is not told otherwise
#: (``--max-concurrent-engine-calls``). Measured on a shared, busy 2-core machine with dockerd
#: (300 replicas of a busybox ``sleep`` on one worker, until all ran): 38-45 s with 8, 29-36 s
#: with 32, 26 s with 16 at a quieter moment, 39 s with 2; another client's ``_ping`` stayed
#: under 0.3 s throughout in every case. The engine's own CPU is the limit: 8 costs at most
#: about a quarter of the start rate and keeps the engine's concurrent work, the daemon's
#: threads and its connections small.
DEFAULT_MAX_CONCURRENT_ENGINE_CALLS = 8
