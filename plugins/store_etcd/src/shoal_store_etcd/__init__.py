"""shoal's etcd store: the cluster state in an external etcd 3.x cluster over mutual TLS."""

from shoal_store_etcd.provider import EtcdStore

__all__ = ["EtcdStore"]
