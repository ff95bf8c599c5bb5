"""The spread scheduler passes the kernel's scheduler conformance suite."""

from __future__ import annotations

import pytest
from shoal.testing.scheduler import SchedulerConformance
from shoal_scheduler_spread import SpreadScheduler


class TestSpreadConformance(SchedulerConformance):
    @pytest.fixture
    def scheduler(self) -> SpreadScheduler:
        return SpreadScheduler()
