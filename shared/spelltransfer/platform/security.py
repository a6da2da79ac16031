"""Bearer-token auth on every call and optional TLS, both configured from the environment.

Server and clients read the same variables, so a demo or test sets them once:

- ``SPELLTRANSFER_API_TOKEN``: the shared bearer token (required by servers; never logged);
- ``SPELLTRANSFER_API_TOKEN_FILE``: a file holding it, when the variable is unset (a compose
  secret: the token then never shows in ``docker inspect``, and changing it recreates no container);
- ``SPELLTRANSFER_TLS_CERT`` / ``SPELLTRANSFER_TLS_KEY``: server certificate and key (PEM); when
  both are set the server listens with TLS;
- ``SPELLTRANSFER_TLS_CA``: the CA (or self-signed cert) clients trust; when set clients use TLS.
"""

from __future__ import annotations

import hmac
import os
from concurrent import futures
from pathlib import Path

import grpc
from pydantic import BaseModel, ConfigDict

from spelltransfer.errors import ConfigError

TOKEN_ENV = "SPELLTRANSFER_API_TOKEN"
TOKEN_FILE_ENV = "SPELLTRANSFER_API_TOKEN_FILE"
CERT_ENV, KEY_ENV, CA_ENV = "SPELLTRANSFER_TLS_CERT", "SPELLTRANSFER_TLS_KEY", "SPELLTRANSFER_TLS_CA"


class SecuritySettings(BaseModel):
    """What a server or client needs to authenticate; built once from the environment."""

    model_config = ConfigDict(frozen=True)

    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    @classmethod
    def from_env(cls) -> "SecuritySettings":
        def path(name: str) -> Path | None:
            value = os.environ.get(name)
            if not value:
                return None
            if not Path(value).is_file():
                raise ConfigError(f"{name}={value}: no such file")
            return Path(value)

        token = os.environ.get(TOKEN_ENV) or None
        token_file = path(TOKEN_FILE_ENV)
        if token is None and token_file is not None:
            token = token_file.read_text(encoding="utf-8").strip() or None
        settings = cls(token=token, tls_cert=path(CERT_ENV), tls_key=path(KEY_ENV),
                       tls_ca=path(CA_ENV))
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise ConfigError(f"set both {CERT_ENV} and {KEY_ENV} for TLS, or neither")
        return settings

    def __repr__(self) -> str:  # never print the token
        return f"SecuritySettings(token={'set' if self.token else 'unset'}, tls_cert={self.tls_cert}, tls_ca={self.tls_ca})"

    __str__ = __repr__


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Reject every call whose ``authorization`` metadata is not ``Bearer <token>``."""

    def __init__(self, token: str):
        if not token:
            raise ConfigError(f"{TOKEN_ENV} is empty: servers refuse to run without a token")
        self._expected = f"Bearer {token}".encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata or ())
        offered = metadata.get("authorization", "")
        if hmac.compare_digest(offered.encode() if isinstance(offered, str) else offered, self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is not None and handler.response_streaming:
            return self._deny_stream
        return self._deny_unary


def make_server(settings: SecuritySettings, max_workers: int = 32) -> grpc.Server:
    """A gRPC server that checks the bearer token on every call."""
    if not settings.token:
        raise ConfigError(f"{TOKEN_ENV} is not set: export a shared secret (or {TOKEN_FILE_ENV}=FILE) before starting a service")
    return grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                       interceptors=[BearerTokenInterceptor(settings.token)])


def bind(server: grpc.Server, settings: SecuritySettings, address: str) -> int:
    """Listen on ``address`` (``host:port``, port 0 = any free port), with TLS when configured."""
    if settings.tls_cert and settings.tls_key:
        credentials = grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise ConfigError(f"cannot listen on {address} (port in use?)")
    return port


class _TokenMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Client side of plain-text channels: add the token to every call's metadata."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        metadata = list(details.metadata or []) + [self._header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details, metadata):
        self.method, self.timeout, self.metadata = details.method, details.timeout, metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


def open_channel(address: str, settings: SecuritySettings | None = None,
                 options: list[tuple[str, object]] | None = None) -> grpc.Channel:
    """A channel to ``address`` that sends the bearer token on every call (TLS if a CA is set)."""
    settings = settings or SecuritySettings.from_env()
    options = list(options or [])
    if settings.tls_ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=settings.tls_ca.read_bytes())
        if settings.token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(settings.token))
        return grpc.secure_channel(address, credentials, options=options)
    channel = grpc.insecure_channel(address, options=options)
    if settings.token:
        channel = grpc.intercept_channel(channel, _TokenMetadata(settings.token))
    return channel
