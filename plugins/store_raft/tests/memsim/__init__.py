"""Whole-cluster Raft simulation over the kernel's store network and the memory transport."""
