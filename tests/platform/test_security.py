"""Bearer token on every call (UNAUTHENTICATED otherwise) and TLS when certificates are configured."""

from __future__ import annotations

import datetime
import ipaddress

import grpc
import pytest

from spelltransfer.errors import ConfigError
from spelltransfer.platform.protos import trainer_pb2, trainer_pb2_grpc
from spelltransfer.platform.security import CA_ENV, CERT_ENV, KEY_ENV, TOKEN_ENV, SecuritySettings, open_channel


@pytest.fixture
def trainer_service(tmp_path):
    from services.trainer.server import serve

    server, port, stop = serve(str(tmp_path / "worker"), port=0)
    yield f"127.0.0.1:{port}"
    stop()


def _stub(address: str, settings: SecuritySettings) -> trainer_pb2_grpc.TrainerServiceStub:
    return trainer_pb2_grpc.TrainerServiceStub(open_channel(address, settings))


def test_calls_need_the_bearer_token(trainer_service, api_token):
    good = _stub(trainer_service, SecuritySettings(token=api_token))
    assert good.GetWorkerInfo(trainer_pb2.WorkerInfoRequest(), timeout=10).slots == 1
    for settings in (SecuritySettings(token=None), SecuritySettings(token=api_token + "x")):
        stub = _stub(trainer_service, settings)
        with pytest.raises(grpc.RpcError) as unary:
            stub.GetWorkerInfo(trainer_pb2.WorkerInfoRequest(), timeout=10)
        assert unary.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as streaming:
            list(stub.WatchTrial(trainer_pb2.WatchTrialRequest(trial_id="x"), timeout=10))
        assert streaming.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as start:
            stub.StartTrial(trainer_pb2.StartTrialRequest(trial_id="t", config_path="c.yaml"), timeout=10)
        assert start.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Nothing was accepted by the unauthenticated StartTrial.
    assert not good.ListTrials(trainer_pb2.ListTrialsRequest(), timeout=10).trials


def test_server_refuses_to_start_without_token(tmp_path, monkeypatch):
    from services.trainer.server import serve

    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        serve(str(tmp_path / "worker"), port=0)
    assert not (tmp_path / "worker").exists()  # refused before touching any state


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_with_configured_certificate(tmp_path, monkeypatch, api_token):
    from services.trainer.server import serve

    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv(CERT_ENV, str(cert))
    monkeypatch.setenv(KEY_ENV, str(key))
    server, port, stop = serve(str(tmp_path / "worker"), port=0)
    address = f"127.0.0.1:{port}"
    try:
        monkeypatch.setenv(CA_ENV, str(cert))
        secure = trainer_pb2_grpc.TrainerServiceStub(open_channel(address))  # settings from the environment
        assert secure.GetWorkerInfo(trainer_pb2.WorkerInfoRequest(), timeout=10).slots == 1

        no_token = _stub(address, SecuritySettings(token=None, tls_ca=cert))
        with pytest.raises(grpc.RpcError) as denied:
            no_token.GetWorkerInfo(trainer_pb2.WorkerInfoRequest(), timeout=10)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED

        plaintext = _stub(address, SecuritySettings(token=api_token))
        with pytest.raises(grpc.RpcError) as refused:
            plaintext.GetWorkerInfo(trainer_pb2.WorkerInfoRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stop()


def test_half_configured_tls_is_an_error(tmp_path, monkeypatch):
    cert, _ = _self_signed(tmp_path)
    monkeypatch.setenv(CERT_ENV, str(cert))
    with pytest.raises(ConfigError, match=KEY_ENV):
        SecuritySettings.from_env()
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="missing.key"):
        SecuritySettings.from_env()


def test_settings_never_show_the_token():
    settings = SecuritySettings(token="s3cret-value")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
