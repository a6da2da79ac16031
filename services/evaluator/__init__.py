"""Evaluator gRPC service (``spelltransfer platform evaluator``)."""
