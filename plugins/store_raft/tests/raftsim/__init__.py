"""Deterministic simulation of whole Raft clusters, and the checkers it is judged by."""
