"""shoal's default scheduler: Docker Swarm's HA spread.

Tasks of a service go to the eligible nodes holding the fewest tasks of that service (total
tasks break ties), optionally spread first across the values of node labels
(``--placement-pref spread=node.labels.zone``).
"""

from shoal_scheduler_spread.scheduler import SpreadScheduler

__all__ = ["SpreadScheduler"]
