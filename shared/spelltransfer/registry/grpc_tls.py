"""Mutual TLS for ``weed mini``'s internal ports: a throwaway CA and one certificate per start.

Without it, anything on the machine can call the master's, filer's and volume server's gRPC
APIs (assign, write, read and delete needles, list and edit filer entries) with no key at all,
and read the volume server's ``/status`` (data dir, collections, volume sizes and file counts)
and the master's UI and ``/cluster/status`` over plain HTTP -- weed guards neither with its JWT
keys or its ``-whiteList`` (a whitelist only wraps the needle handlers, and on loopback every
local user shares the S3 gateway's address anyway).

With ``[grpc]`` set, every gRPC server in the process asks for a client certificate signed by
this CA; with ``[https.master|volume|filer]`` set, so do their HTTP ports (TLS with
``RequireAndVerifyClientCert``; a plain-HTTP request gets weed's one-line 400 and no data),
and ``[https.client]`` makes the components (the S3 gateway's uploads and downloads to the
volume server included) dial each other over HTTPS with the same certificate. Only the S3 port
stays plain HTTP, and it wants the S3 keys. The CA's key is never written: nothing can sign
another certificate after ``make_certificates`` returns, and each start makes a new pair, so
nothing stored depends on them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Every gRPC server section ``weed scaffold -config=security`` lists (weed 4.x).
WEED_GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "msg_broker", "msg_agent", "worker", "mq", "client")
# The HTTP servers behind mutual TLS (``[https.<component>]``). Not the S3 port (clients, keys) and
# not admin (its UI is off: ``-admin.ui=false``, every path 404).
WEED_HTTPS_COMPONENTS = ("master", "volume", "filer")


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def make_certificates(folder: Path) -> dict[str, Path]:
    """Write ``ca.crt``, ``weed.crt`` and ``weed.key`` (0600) into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now - datetime.timedelta(minutes=5), not_valid_after=now + datetime.timedelta(days=3650))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "spelltransfer weed mini CA")])
    ca = (x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(),
                                  serial_number=x509.random_serial_number(), **valid)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    certificate = (x509.CertificateBuilder(subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weed")]),
                                           issuer_name=ca_name, public_key=key.public_key(),
                                           serial_number=x509.random_serial_number(), **valid)
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.crt", "cert": folder / "weed.crt", "key": folder / "weed.key"}
    _write_private(paths["ca"], ca.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["cert"], certificate.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["key"], key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return paths


def weed_tls_env(folder: Path) -> dict[str, str]:
    """Fresh certificates in ``folder`` and the ``WEED_GRPC_*`` and ``WEED_HTTPS_*`` variables
    (security.toml's ``[grpc]``, ``[https.<server>]`` and ``[https.client]``)."""
    paths = make_certificates(folder)
    ca, cert, key = str(paths["ca"]), str(paths["cert"]), str(paths["key"])
    env = {"WEED_GRPC_CA": ca}
    for component in WEED_GRPC_COMPONENTS:
        env[f"WEED_GRPC_{component.upper()}_CERT"] = cert
        env[f"WEED_GRPC_{component.upper()}_KEY"] = key
    for component in WEED_HTTPS_COMPONENTS:
        env.update({f"WEED_HTTPS_{component.upper()}_{part}": value
                    for part, value in (("CERT", cert), ("KEY", key), ("CA", ca))})
    env.update(WEED_HTTPS_CLIENT_ENABLED="true", WEED_HTTPS_CLIENT_CERT=cert, WEED_HTTPS_CLIENT_KEY=key,
               WEED_HTTPS_CLIENT_CA=ca)
    return env
