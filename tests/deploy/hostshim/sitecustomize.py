"""Compose's network for local processes (tests/deploy/test_compose_smoke.py puts this on PYTHONPATH).

``SMOKE_HOSTS`` maps ``name:port`` as a container would dial it (``mlflow:5000``,
``trainer-0:50061``, ``localhost:50051`` on the host side) to the loopback port the smoke test's
stand-in listens on. Only the connection target changes: an HTTP client still sends
``Host: mlflow:5000``, so MLflow's allowed-hosts check sees what it sees under compose.
"""

import json
import os

_HOSTS = json.loads(os.environ.get("SMOKE_HOSTS") or "{}")

if _HOSTS:
    import socket

    _getaddrinfo = socket.getaddrinfo

    def _mapped(host, port):
        key = f"{host.decode() if isinstance(host, bytes) else host}:{port}"
        return _HOSTS.get(key)

    def getaddrinfo(host, port, *args, **kwargs):
        local = _mapped(host, port) if host is not None else None
        return _getaddrinfo("127.0.0.1", local, *args, **kwargs) if local else _getaddrinfo(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo

    try:
        import grpc
    except ImportError:
        grpc = None
    if grpc is not None:
        def _target(target: str) -> str:
            host, _, port = target.rpartition(":")
            local = _mapped(host, port)
            return f"127.0.0.1:{local}" if local else target

        _insecure, _secure = grpc.insecure_channel, grpc.secure_channel
        grpc.insecure_channel = lambda target, *a, **k: _insecure(_target(target), *a, **k)
        grpc.secure_channel = lambda target, *a, **k: _secure(_target(target), *a, **k)
