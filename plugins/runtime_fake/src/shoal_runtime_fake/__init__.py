"""shoal runtime plugin ``fake``: containers as in-memory state (no engine, no processes).

For tests of everything above the runtime (agent, dispatcher, orchestrator, scheduler) and for
hollow nodes (``shoal hollow``): a task's container is a record with a tiny interpreted
"process" (``script.py``), configurable start delays, injected failures and exits.
"""

from shoal_runtime_fake.engine import FakeContainer, FakeEngine, engine_named
from shoal_runtime_fake.options import FakeOptions
from shoal_runtime_fake.runtime import FakeRuntime

__all__ = ["FakeContainer", "FakeEngine", "FakeOptions", "FakeRuntime", "engine_named"]
