"""Thin gRPC/HTTP layers over the spelltransfer package: parse, call an engine, serialise."""
