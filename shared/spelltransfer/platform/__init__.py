"""Common code for the gRPC services: generated protos, auth + TLS, error mapping, child processes.

Services (``services/``) stay thin: they parse a request, call an engine and serialise the answer;
everything they share lives here.
"""
