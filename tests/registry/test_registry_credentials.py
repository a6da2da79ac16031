"""Where S3 keys come from, that they never print, and that a wrong secret says so clearly."""

from __future__ import annotations

import stat

import pytest
from pydantic import SecretStr

from spelltransfer.errors import ConfigError
from spelltransfer.registry import s3
from spelltransfer.registry.config import RegistryConfig
from spelltransfer.registry.credentials import (
    S3Credentials,
    generate_credentials_file,
    load_credentials,
)
from spelltransfer.registry.errors import CredentialsError
from spelltransfer.registry.stack import RegistryStack


def test_project_variables_win_over_aws_ones():
    creds = load_credentials({
        "SPELLTRANSFER_S3_ACCESS_KEY_ID": "mine", "SPELLTRANSFER_S3_SECRET_ACCESS_KEY": "s1",
        "AWS_ACCESS_KEY_ID": "personal", "AWS_SECRET_ACCESS_KEY": "s2",
    })
    assert creds.access_key_id == "mine" and creds.secret_access_key.get_secret_value() == "s1"
    aws = load_credentials({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert aws.access_key_id == "a" and aws.source == "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"


def test_file_variables_read_docker_secrets(tmp_path):
    (tmp_path / "key").write_text("filekey\n")
    (tmp_path / "secret").write_text("filesecret\n")
    creds = load_credentials({
        "SPELLTRANSFER_S3_ACCESS_KEY_ID_FILE": str(tmp_path / "key"),
        "SPELLTRANSFER_S3_SECRET_ACCESS_KEY_FILE": str(tmp_path / "secret"),
    })
    assert (creds.access_key_id, creds.secret_access_key.get_secret_value()) == ("filekey", "filesecret")
    with pytest.raises(CredentialsError, match="SPELLTRANSFER_S3_SECRET_ACCESS_KEY_FILE=.*missing.*cannot read"):
        load_credentials({"SPELLTRANSFER_S3_ACCESS_KEY_ID": "k",
                          "SPELLTRANSFER_S3_SECRET_ACCESS_KEY_FILE": str(tmp_path / "missing")})


def test_missing_or_half_credentials_name_the_variable():
    with pytest.raises(CredentialsError, match="SPELLTRANSFER_S3_ACCESS_KEY_ID and SPELLTRANSFER_S3_SECRET_ACCESS_KEY"):
        load_credentials({})
    with pytest.raises(CredentialsError, match="set SPELLTRANSFER_S3_SECRET_ACCESS_KEY"):
        load_credentials({"SPELLTRANSFER_S3_ACCESS_KEY_ID": "k"})


def test_secret_never_prints():
    creds = S3Credentials(access_key_id="k", secret_access_key=SecretStr("TOPSECRET-xyz"))
    for text in (str(creds), repr(creds), f"{creds}", str(creds.model_dump()), creds.model_dump_json()):
        assert "TOPSECRET" not in text


def test_generated_credentials_are_private_and_reloaded(tmp_path):
    path = tmp_path / "home" / "credentials"
    made = generate_credentials_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_credentials({}, fallback_file=path)
    assert again.secret_access_key.get_secret_value() == made.secret_access_key.get_secret_value()
    with pytest.raises(FileExistsError):
        generate_credentials_file(path)  # never overwrite keys a running server was started with


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="bucket"):
        RegistryConfig.from_env({"SPELLTRANSFER_S3_BUCKET": "Bad_Bucket"}, home=tmp_path)
    with pytest.raises(ConfigError, match="mlflow_port"):
        RegistryConfig.from_env({"SPELLTRANSFER_MLFLOW_PORT": "99999"}, home=tmp_path)


@pytest.mark.slow
def test_wrong_secret_against_live_s3_is_a_clear_error(live_stack, capfd):
    wrong = S3Credentials(access_key_id=live_stack.access_key, secret_access_key=SecretStr("WRONG-" + "x" * 20),
                          source="SPELLTRANSFER_S3_SECRET_ACCESS_KEY")
    with pytest.raises(CredentialsError) as caught:
        s3.list_objects(live_stack.s3_endpoint_url, wrong, live_stack.bucket)
    message = str(caught.value)
    assert "SignatureDoesNotMatch" in message and live_stack.access_key in message and "secret" in message
    assert "WRONG-" not in message and live_stack.secret not in message
    # `registry up` against the running S3 with the wrong secret: fails fast, starts nothing new.
    before = live_stack.stack().read_state()
    stack = RegistryStack(RegistryConfig(home=live_stack.home, bucket=live_stack.bucket, startup_timeout_s=20),
                          credentials=wrong)
    with pytest.raises(CredentialsError, match="rejected the credentials"):
        stack.up()
    assert live_stack.stack().read_state()["s3"]["pid"] == before["s3"]["pid"]
    # The CLI turns it into one red line and exit code 2.
    env = dict(live_stack.env, SPELLTRANSFER_S3_SECRET_ACCESS_KEY="WRONG-cli-secret")
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "spelltransfer.cli", "registry", "up"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "rejected the credentials" in result.stderr and "Traceback" not in result.stderr
    assert "WRONG-cli-secret" not in result.stdout + result.stderr
    live_stack.outputs += [result.stdout, result.stderr]


def test_stack_generates_keys_only_when_none_are_configured(tmp_path, monkeypatch):
    for name in ("SPELLTRANSFER_S3_ACCESS_KEY_ID", "SPELLTRANSFER_S3_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "SPELLTRANSFER_S3_ACCESS_KEY_ID_FILE", "SPELLTRANSFER_S3_SECRET_ACCESS_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    stack = RegistryStack(RegistryConfig(home=tmp_path / "a"))
    generated = stack.credentials(generate=True)
    assert (tmp_path / "a" / "credentials").is_file()
    assert RegistryStack(RegistryConfig(home=tmp_path / "a")).credentials() == generated  # read back later
    monkeypatch.setenv("SPELLTRANSFER_S3_ACCESS_KEY_ID", "only-the-key")
    with pytest.raises(CredentialsError, match="SPELLTRANSFER_S3_SECRET_ACCESS_KEY"):
        RegistryStack(RegistryConfig(home=tmp_path / "b")).credentials(generate=True)
    assert not (tmp_path / "b" / "credentials").exists()
    monkeypatch.delenv("SPELLTRANSFER_S3_ACCESS_KEY_ID")
    external = RegistryStack(RegistryConfig(home=tmp_path / "c", s3_endpoint_url="http://minio:9000"))
    with pytest.raises(CredentialsError, match="no S3 credentials"):
        external.credentials(generate=True)  # never invent keys for someone else's S3
