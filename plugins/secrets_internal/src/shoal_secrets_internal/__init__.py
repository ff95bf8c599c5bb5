"""shoal's built-in secrets backend: values sealed with AES-256-GCM in the replicated store."""

from shoal_secrets_internal.sealing import InternalSecrets

__all__ = ["InternalSecrets"]
