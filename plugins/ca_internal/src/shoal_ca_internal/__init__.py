"""shoal's built-in cluster CA: an ECDSA P-256 root whose key lives in the replicated store."""

from shoal_ca_internal.ca import InternalCA

__all__ = ["InternalCA"]
