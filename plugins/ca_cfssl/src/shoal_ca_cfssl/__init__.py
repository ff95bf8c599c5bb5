"""shoal's external CA plugin: node certificates signed by a cfssl server over mutual TLS."""

from shoal_ca_cfssl.ca import CfsslCA

__all__ = ["CfsslCA"]
