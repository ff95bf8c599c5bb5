"""A hollow fleet process tunes its garbage collector for many agents; a manager does not (issue 18).

Each running task keeps ~45 tracked objects in a fleet process, and at Python's young threshold
(700 allocations) each was walked by a young collection, again by a middle one, and again by the
collector policy's step, which collects everything not frozen every 2 s anyway.
"""

from __future__ import annotations

import gc

from shoal.gcpolicy import CollectorPolicy
from shoal.hollow.fleet import FLEET_YOUNG_THRESHOLD, fleet_collector


async def test_a_fleet_collects_young_objects_less_often_while_its_policy_runs() -> None:
    before = gc.get_threshold()
    policy = fleet_collector()
    policy.start()
    try:
        assert gc.get_threshold()[0] == FLEET_YOUNG_THRESHOLD > before[0]
    finally:
        await policy.stop()
        gc.unfreeze()
    assert gc.get_threshold() == before, "stop gives every threshold back"


async def test_a_managers_policy_leaves_the_young_threshold_as_python_has_it() -> None:
    before = gc.get_threshold()
    policy = CollectorPolicy()
    policy.start()
    try:
        assert gc.get_threshold()[:2] == before[:2]
    finally:
        await policy.stop()
        gc.unfreeze()
