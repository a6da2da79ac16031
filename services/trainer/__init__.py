"""Trainer worker gRPC service (``spelltransfer platform trainer``)."""
