"""Sweep controller gRPC service (``spelltransfer platform controller``)."""
