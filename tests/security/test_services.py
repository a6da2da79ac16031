"""Issue 17, the services side, replayed against real processes: gRPC services on 127.0.0.1, the
``spelltransfer serve inference`` CLI, ``weed mini``. Nothing here trains a model.

- paths a request names outside the service's roots are INVALID_ARGUMENT naming the field, and
  a file outside them is never opened (its content never comes back);
- an override over the per-override limit is refused at the API with the limit in the message;
- a trial whose process cannot start is FAILED with the reason; a sweep with no successful trial
  ends FAILED;
- SIGTERM to ``serve inference`` exits 0 with vLLM's whole process group gone;
- the S3 server's filer and master HTTP ports refuse anonymous reads and writes, its volume and
  master HTTP ports give no state (``/status``, ``/cluster/status``) without a client certificate,
  and its gRPC ports want one (from the CA made for that start) -- each checked live with it;
- ``registry serve`` refuses a non-loopback host without a login, answers 401 to anonymous
  requests with one, and exits 0 on SIGTERM in every phase with mlflow's workers gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest
import yaml

from spelltransfer.platform.protos import (evaluator_pb2, evaluator_pb2_grpc, sweep_pb2, sweep_pb2_grpc, trainer_pb2,
                                           trainer_pb2_grpc)
from spelltransfer.platform.security import SecuritySettings, bind, make_server, open_channel

OUTSIDE = "/tmp/spelltransfer-outside-the-roots"  # not under the pytest temp root


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _refused(call, field: str) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    details = error.value.details()
    assert field in details, details
    assert len(details) < 1000, details[:200]
    return details


# ---------------------------------------------------------------- the path check itself


def test_roots_resolve_before_comparing(tmp_path):
    from spelltransfer.errors import ConfigError
    from spelltransfer.platform.roots import ServiceRoots

    data = tmp_path / "data"
    (data / "set").mkdir(parents=True)
    (tmp_path / "data2").mkdir()
    (data / "link").symlink_to("/etc")
    roots = ServiceRoots(data=(data.resolve(),), storage=(tmp_path.resolve(),))
    assert roots.check("data", "training.data_dir", str(data / "set")) == (data / "set").resolve()
    for escape in (data / ".." / "data2", tmp_path / "data2", data / "link", "/etc", "relative/../../x"):
        with pytest.raises(ConfigError, match=r"^training\.data_dir: .* outside the service's data roots"):
            roots.check("data", "training.data_dir", str(escape))
    roots.check_storage_url("storage", f"sqlite:///{tmp_path}/optuna.db")
    roots.check_storage_url("storage", "postgresql://user@db/optuna")
    with pytest.raises(ConfigError, match="^storage: '/anywhere.db' is outside"):
        roots.check_storage_url("storage", "sqlite:////anywhere.db")
    roots.check_model("model.name", "smollm2-135m")  # a name, not a path
    with pytest.raises(ConfigError, match="^model.name: "):
        roots.check_model("model.name", "/etc")


# ---------------------------------------------------------------- trainer worker


@pytest.fixture
def trainer(tmp_path):
    from services.trainer.server import serve

    _, port, stop = serve(str(tmp_path / "worker"), port=0)
    channel = open_channel(f"127.0.0.1:{port}")
    yield trainer_pb2_grpc.TrainerServiceStub(channel)
    channel.close()
    stop()


def test_start_trial_paths_and_sizes_are_bounded(trainer, base_config):
    def start(config_path=base_config, overrides=()):
        request = trainer_pb2.StartTrialRequest(trial_id="t1", config_path=config_path, overrides=list(overrides))
        return lambda: trainer.StartTrial(request, timeout=30)

    # A YAML-parseable file outside the roots is never opened: the answer names the field, not its lines.
    details = _refused(start(config_path="/etc/passwd"), "config_path")
    assert details.startswith("config_path: '/etc/passwd' is outside") and "root:" not in details
    for override, field in [
        (f"training.plot_dir={OUTSIDE}", "training.plot_dir"),
        ("training.data_dir=/etc", "training.data_dir"),
        ("training.output_root=/", "training.output_root"),
        (f"training.tracking.mlflow.tracking_uri=sqlite:///{OUTSIDE}/mlflow.db", "training.tracking.mlflow.tracking_uri"),
    ]:
        _refused(start(overrides=[override]), field)
    # 3 MB in one override: refused with the limit, instead of a trial that can never start.
    details = _refused(start(overrides=["training.run_name=" + "a" * 3_000_000]), "training.run_name")
    assert "over the limit of 4096 bytes" in details
    assert not trainer.ListTrials(trainer_pb2.ListTrialsRequest(), timeout=10).trials
    assert not Path(OUTSIDE).exists()


def test_start_trial_resolved_config_paths_are_bounded(trainer, base_config, tmp_path):
    """The resolved config the controller sends (``config_yaml``) is held to the same roots as a
    config file plus overrides, before anything is written; bad YAML or fields name the field."""
    from spelltransfer.train.config import load_training_config

    def start(config_yaml: str, **fields):
        request = trainer_pb2.StartTrialRequest(trial_id="r1", config_yaml=config_yaml, **fields)
        return lambda: trainer.StartTrial(request, timeout=30)

    for override, field in [
        (f"training.plot_dir={OUTSIDE}", "training.plot_dir"),
        ("training.data_dir=/etc", "training.data_dir"),
        ("training.output_root=/", "training.output_root"),
        (f"training.tracking.mlflow.tracking_uri=sqlite:///{OUTSIDE}/mlflow.db", "training.tracking.mlflow.tracking_uri"),
    ]:
        _refused(start(load_training_config(base_config, [override]).to_yaml()), field)
    _refused(start("training: [unclosed"), "config_yaml")
    _refused(start("- a list"), "config_yaml: expected a mapping")
    _refused(start("training:\n  max_steps: 0\n"), "training.max_steps")
    _refused(start(load_training_config(base_config).to_yaml(), config_path=base_config), "config_yaml: give")
    _refused(start("#" + "a" * 300_000), "over the limit of")
    assert not trainer.ListTrials(trainer_pb2.ListTrialsRequest(), timeout=10).trials
    assert not (tmp_path / "worker" / "configs").exists()
    assert not Path(OUTSIDE).exists()


# ---------------------------------------------------------------- sweep controller


@pytest.fixture
def controller(tmp_path):
    from services.sweep.server import serve

    _, port, stop = serve(str(tmp_path / "controller"), port=0)  # no workers: nothing is dispatched
    channel = open_channel(f"127.0.0.1:{port}")
    yield sweep_pb2_grpc.SweepServiceStub(channel)
    channel.close()
    stop()


def _spec(base: str, tmp_path, **changes) -> str:
    spec = {"name": "hostile", "base_config": base, "strategy": "random", "max_trials": 1, "max_retries": 0,
            "parameters": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
            "results_dir": str(tmp_path / "results"), "mlflow": {"enabled": False}}
    spec.update(changes)
    return yaml.safe_dump(spec, width=10**9)


@pytest.mark.parametrize("changes, field", [
    ({"base_config": "/etc/passwd"}, "base_config"),
    ({"results_dir": OUTSIDE}, "results_dir"),
    ({"storage": f"sqlite:///{OUTSIDE}/optuna.db"}, "storage"),
    ({"overrides": ["training.data_dir=/etc"]}, "training.data_dir"),
    ({"overrides": [f"training.plot_dir={OUTSIDE}"]}, "training.plot_dir"),
    ({"parameters": {"training.data_dir": {"values": ["data/spelling", "/etc"]}}}, "parameters.training.data_dir"),
    ({"wandb": {"dir": OUTSIDE}}, "wandb.dir"),
    ({"overrides": ["training.run_name=" + "a" * 100_000]}, "over the limit of 4096 bytes"),
    ({"#": "a" * 300_000}, "spec_yaml: 300"),
])
def test_submit_sweep_paths_and_sizes_are_bounded(controller, base_config, tmp_path, changes, field):
    changes = dict(changes)
    padding = changes.pop("#", "")
    text = _spec(base_config, tmp_path, **changes) + (f"# {padding}\n" if padding else "")
    details = _refused(lambda: controller.SubmitSweep(sweep_pb2.SubmitSweepRequest(spec_yaml=text), timeout=30),
                       field)
    assert "root:" not in details
    assert "is outside the service's" in details or "over the limit of" in details, details
    assert not controller.ListSweeps(sweep_pb2.ListSweepsRequest(), timeout=10).sweeps
    assert not Path(OUTSIDE).exists()


# ---------------------------------------------------------------- evaluator


@pytest.mark.parametrize("change, field", [
    ({"extra_args": [f"--out={OUTSIDE}/result.json"]}, "extra_args[0]: '--out' is not allowed"),
    ({"extra_args": ["--run-dir", "/etc"]}, "extra_args[0]: '--run-dir' is not allowed"),
    ({"extra_args": ["--batch-size", "8", "--tasks=spelling;rm"]}, "extra_args[2]: --tasks"),
    ({"data": "/etc"}, "data: '/etc' is outside"),
    ({"adapter": "/etc"}, "adapter: '/etc' is outside"),
    ({"model": "/etc"}, "model: '/etc' is outside"),
])
def test_evaluate_paths_and_flags_are_allowlisted(evaluator, tmp_path, change, field):
    (tmp_path / "data").mkdir()
    fields = {"model": "smollm2-135m", "data": str(tmp_path / "data"), "split": "validation", **change}
    _refused(lambda: list(evaluator.Evaluate(evaluator_pb2.EvaluateRequest(**fields), timeout=30)), field)
    assert not list((tmp_path / "evals").glob("eval-*"))  # no evaluation process was started
    assert not Path(OUTSIDE).exists()


# ---------------------------------------------------------------- a trial that cannot start


def test_trial_that_cannot_start_fails_and_its_sweep_fails(tmp_path, base_config):
    """The kernel refuses the trial's command line (one argument over MAX_ARG_STRLEN, 128 KiB, as a
    3 MB override did): the trial is FAILED with the reason after its start attempts, the
    controller's retry fails the same way, and the sweep ends FAILED — not PENDING/RUNNING forever."""
    from services.sweep.server import serve as serve_controller
    from services.trainer.server import TrainerServicer
    from spelltransfer.platform.worker import TrainerWorker

    def unstartable(config_path, overrides, output_dir, resume):
        return [sys.executable, "-c", "pass", "x" * 200_000]

    settings = SecuritySettings.from_env()
    worker = TrainerWorker(tmp_path / "worker", train_command=unstartable)
    server = make_server(settings)
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(TrainerServicer(worker), server)
    address = f"127.0.0.1:{bind(server, settings, '127.0.0.1:0')}"
    server.start()
    _, port, stop_controller = serve_controller(str(tmp_path / "controller"), port=0, workers=[address])
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        stub = sweep_pb2_grpc.SweepServiceStub(channel)
        stub.SubmitSweep(sweep_pb2.SubmitSweepRequest(spec_yaml=_spec(base_config, tmp_path, max_retries=1)),
                         timeout=30)
        final = _wait(lambda: (s := stub.GetSweep(sweep_pb2.SweepRef(name="hostile"), timeout=10)).state
                      != sweep_pb2.SWEEP_RUNNING and s, 30, "the sweep to end")
        assert final.state == sweep_pb2.SWEEP_FAILED, final
        assert final.error.startswith("no trial succeeded (1 FAIL)"), final.error
        assert "Argument list too long" in final.error
        assert final.trials[0].attempts == 2
        trials = worker.list_trials()
        assert [t.state for t in trials] == ["FAILED", "FAILED"]
        assert all("could not start the trial's process (3 attempts)" in t.error for t in trials)
    finally:
        channel.close()
        stop_controller()
        server.stop(grace=1).wait()
        worker.close()


# ---------------------------------------------------------------- SIGTERM to serve inference

FAKE_VLLM = '''
import http.server, json, os, signal, subprocess, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # vLLM's engine core
open(os.environ["FAKE_VLLM_ENGINE_PID"], "w").write(str(engine.pid))

ready = os.environ.get("FAKE_VLLM_READY") != "never"  # "never": still loading its weights

class Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": "base"}]}).encode()
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # leaves the engine behind, as a crash would
http.server.HTTPServer(("127.0.0.1", port), Models).serve_forever()
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state not in ("Z", "X")


@pytest.mark.parametrize("phase", ["serving", "starting"])
def test_sigterm_stops_serve_inference_cleanly(tmp_path, phase):
    """SIGTERM once vLLM answers, or while the wrapper still waits for it to answer: exit 0, no
    traceback, vLLM's whole group (its engine core) gone."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "fake_vllm.py").write_text(FAKE_VLLM)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'fake_vllm.py'} \"$@\"\n")
    python.chmod(0o755)
    engine_pid_file = tmp_path / "engine.pid"
    env = dict(os.environ, SPELLTRANSFER_SERVE_PYTHON=str(python), FAKE_VLLM_ENGINE_PID=str(engine_pid_file),
               FAKE_VLLM_READY="never" if phase == "starting" else "now")
    command = [sys.executable, "-m", "spelltransfer.cli", "serve", "inference", "--model", str(tmp_path / "model"),
               "--port", "0", "--log-file", str(tmp_path / "vllm.log")]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    engine = 0
    try:
        _wait(lambda: engine_pid_file.exists() and engine_pid_file.read_text(), 60, "the fake vLLM to start")
        engine = int(engine_pid_file.read_text())
        time.sleep(1.0)  # serving: past the readiness poll, the wrapper waits on vLLM; starting: polling
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        if engine and _alive(engine):
            os.kill(engine, signal.SIGKILL)
            raise AssertionError("vLLM's engine process outlived `serve inference`")
    assert ("vLLM ready" in stderr) == (phase == "serving"), stderr
    assert child.returncode == 0, stderr
    assert "Traceback" not in stderr and "vLLM stopped (SIGTERM)" in stderr, stderr


# ---------------------------------------------------------------- the local S3 server


@pytest.fixture(scope="module")
def local_s3(tmp_path_factory):
    """``weed mini`` as ``registry up`` starts it, holding one object (the champion's weights)."""
    from pydantic import SecretStr

    from spelltransfer.registry import processes, s3
    from spelltransfer.registry.credentials import S3Credentials

    folder = tmp_path_factory.mktemp("local-s3")
    credentials = S3Credentials(access_key_id="sttest", secret_access_key=SecretStr("Sp3ll-" + os.urandom(8).hex()),
                                source="test")
    ports = s3.allocate_weed_ports("127.0.0.1")
    record = s3.start_weed(folder / "s3", folder / "s3.log", credentials, "127.0.0.1", ports)
    try:
        s3.wait_ready(record["endpoint_url"], credentials, 60, record)
        s3.ensure_bucket(record["endpoint_url"], credentials, "models")
        client = s3.s3_client(record["endpoint_url"], credentials)
        client.put_object(Bucket="models", Key="champion/adapter_model.safetensors", Body=b"weights")
        yield {"ports": ports, "client": client, "credentials": credentials,
               "tls_dir": folder / "s3" / s3.GRPC_TLS_DIR}
    finally:
        processes.stop(record)


def _unchanged(client) -> None:
    body = client.get_object(Bucket="models", Key="champion/adapter_model.safetensors")["Body"].read()
    assert body == b"weights"  # the keys still read and write through the S3 port
    listed = client.list_objects_v2(Bucket="models", Prefix="champion/")
    assert [item["Key"] for item in listed.get("Contents", [])] == ["champion/adapter_model.safetensors"]


def _tls_files(local_s3) -> dict[str, str]:
    tls = local_s3["tls_dir"]
    return {"ca": str(tls / "ca.crt"), "cert": str(tls / "weed.crt"), "key": str(tls / "weed.key")}


def test_s3_filer_port_refuses_anonymous_reads_and_writes(local_s3):
    """Without the start's client certificate the filer's HTTP port is TLS-only (a plain request
    gets weed's one-line 400); with it but without a filer JWT, reads and writes are still refused."""
    import requests

    tls = _tls_files(local_s3)
    port = local_s3["ports"]["filer.port"]
    for scheme, options in (("http", {}), ("https", {"verify": tls["ca"], "cert": (tls["cert"], tls["key"])})):
        filer = f"{scheme}://127.0.0.1:{port}/buckets/models"
        anonymous = [
            requests.get(f"{filer}/champion/adapter_model.safetensors", timeout=10, **options),
            requests.get(f"{filer}/champion/", timeout=10, **options),
            requests.put(f"{filer}/champion/adapter_model.safetensors", data=b"evil", timeout=10, **options),
            requests.post(f"{filer}/champion/new.bin", files={"file": ("new.bin", b"evil")}, timeout=10, **options),
        ]
        refused = (400, 401, 404) if scheme == "http" else (401, 404)
        assert all(r.status_code in refused for r in anonymous), (scheme, [(r.status_code, r.text[:80]) for r in anonymous])
        assert all(b"weights" not in r.content for r in anonymous)
    _unchanged(local_s3["client"])


def test_s3_master_http_refuses_anonymous_assign_and_writes(local_s3):
    import requests

    master = f"http://127.0.0.1:{local_s3['ports']['master.port']}"
    anonymous = {
        "assign": requests.get(f"{master}/dir/assign", timeout=10),
        "submit": requests.post(f"{master}/submit", files={"file": ("x.bin", b"evil")}, timeout=10),
        "grow": requests.get(f"{master}/vol/grow?count=1", timeout=10),
        "lookup": requests.get(f"{master}/dir/lookup?volumeId=1", timeout=10),
    }
    granted = {name: (r.status_code, r.text[:80]) for name, r in anonymous.items() if r.status_code < 400}
    assert not granted, granted
    assert all('"fid"' not in r.text for r in anonymous.values())
    _unchanged(local_s3["client"])


# What weed answers on these without any JWT check: the volume server's state (data dir, disk
# totals, every volume's collection, size and file count) and the master's UI and cluster state.
_STATUS_PAGES = {"volume.port": "/status", "master.port": "/cluster/status"}
_STATUS_LEAKS = ("DiskStatuses", "Volumes", '"models"', "IsLeader", "MaxVolumeId")


def test_s3_volume_and_master_http_give_no_state_without_the_certificate(local_s3):
    """Plain HTTP gets a one-line 400, HTTPS without a client certificate fails the handshake;
    the same page with the start's certificate answers (the port is live: only that differs)."""
    import requests

    tls = _tls_files(local_s3)
    for name, page in _STATUS_PAGES.items():
        port = local_s3["ports"][name]
        plain = requests.get(f"http://127.0.0.1:{port}{page}", timeout=10)
        assert plain.status_code == 400, (name, plain.status_code, plain.text[:200])
        assert not any(leak in plain.text for leak in _STATUS_LEAKS), (name, plain.text[:200])
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{port}{page}", verify=tls["ca"], timeout=10)
        mutual = requests.get(f"https://127.0.0.1:{port}{page}", verify=tls["ca"], cert=(tls["cert"], tls["key"]),
                              timeout=10)
        assert mutual.status_code == 200 and any(leak in mutual.text for leak in _STATUS_LEAKS), (name, mutual.text[:200])
    filer = local_s3["ports"]["filer.port"]
    assert requests.get(f"http://127.0.0.1:{filer}/buckets/models/champion/", timeout=10).status_code == 400
    _unchanged(local_s3["client"])  # uploads and downloads through the S3 port still work


# One cheap call per gRPC service; an empty message is a valid request for each.
_GRPC_PROBES = {
    "master.port.grpc": "/master_pb.Seaweed/GetMasterConfiguration",
    "filer.port.grpc": "/filer_pb.SeaweedFiler/GetFilerConfiguration",
    "volume.port.grpc": "/volume_server_pb.VolumeServer/VolumeServerStatus",
}
# A method no server has: UNIMPLEMENTED proves the TLS handshake passed and a gRPC server answered
# (a closed port, a refused handshake and a missing certificate are all UNAVAILABLE).
_UNKNOWN_METHOD = "/spelltransfer.Probe/Nothing"


def _grpc_call(port: int, method: str, credentials=None) -> grpc.StatusCode:
    target = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        call = channel.unary_unary(method, request_serializer=lambda m: m, response_deserializer=lambda m: m)
        try:
            call(b"", timeout=5)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            return error.code()


def _grpc_answers(ports: dict[str, int], tls_dir: Path) -> dict[str, tuple]:
    """Per gRPC port: (plain, TLS without a client certificate, mutual TLS) for a real method where
    an empty request is safe, and for ``_UNKNOWN_METHOD`` on every port (s3 and admin included)."""
    ca = (tls_dir / "ca.crt").read_bytes()
    no_client_cert = grpc.ssl_channel_credentials(root_certificates=ca)
    with_client_cert = grpc.ssl_channel_credentials(root_certificates=ca, private_key=(tls_dir / "weed.key").read_bytes(),
                                                    certificate_chain=(tls_dir / "weed.crt").read_bytes())
    probes = [(name, method) for name, method in _GRPC_PROBES.items()]
    probes += [(name, _UNKNOWN_METHOD) for name in (*_GRPC_PROBES, "s3.port.grpc", "admin.port.grpc")]
    return {(name, method): tuple(_grpc_call(ports[name], method, credentials)
                                  for credentials in (None, no_client_cert, with_client_cert))
            for name, method in probes}


def assert_grpc_ports_want_a_client_certificate(ports: dict[str, int], tls_dir: Path) -> None:
    answers = _grpc_answers(ports, tls_dir)
    for (name, method), (plain, tls_only, mutual) in answers.items():
        assert plain == tls_only == grpc.StatusCode.UNAVAILABLE, (name, method, answers)
        live = grpc.StatusCode.UNIMPLEMENTED if method == _UNKNOWN_METHOD else grpc.StatusCode.OK
        assert mutual == live, (name, method, answers)  # the port is live: only the certificate differs


def test_s3_grpc_ports_want_a_client_certificate(local_s3):
    assert_grpc_ports_want_a_client_certificate(local_s3["ports"], local_s3["tls_dir"])
    _unchanged(local_s3["client"])


def test_s3_grpc_check_fails_on_a_dead_port(local_s3):
    """The check itself: a port nothing listens on (the old admin/s3 check passed it: an insecure
    channel that never gets ready looks the same as a refused handshake) must fail it."""
    from spelltransfer.registry import processes

    for name in ("s3.port.grpc", "admin.port.grpc"):
        dead = {**local_s3["ports"], name: processes.free_port()}
        with pytest.raises(AssertionError, match=name):
            assert_grpc_ports_want_a_client_certificate(dead, local_s3["tls_dir"])


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _processes_naming(text: str) -> list:
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and text in " ".join(process.info["cmdline"] or []):
                found.append(process)
        except psutil.Error:
            pass
    return found


def _start_registry_serve(local_s3, tmp_path, host: str = "127.0.0.1", s3_port: int | None = None, **env_extra):
    """`spelltransfer registry serve` against ``local_s3`` (or a dead ``s3_port``); output in a log."""
    from spelltransfer.registry import processes

    port = processes.free_port()
    home = tmp_path / "registry-home"  # in every process's command line (the sqlite URI)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPELLTRANSFER_S3_", "MLFLOW_"))}
    env.update(SPELLTRANSFER_S3_ENDPOINT_URL=f"http://127.0.0.1:{s3_port or local_s3['ports']['s3.port']}",
               SPELLTRANSFER_S3_BUCKET="models", SPELLTRANSFER_REGISTRY_HOME=str(home), PYTHONUNBUFFERED="1",
               SPELLTRANSFER_S3_ACCESS_KEY_ID=local_s3["credentials"].access_key_id,
               SPELLTRANSFER_S3_SECRET_ACCESS_KEY=local_s3["credentials"].secret_access_key.get_secret_value(),
               **env_extra)
    command = [sys.executable, "-m", "spelltransfer.cli", "registry", "serve", "--host", host,
               "--port", str(port), "--workers", "2"]
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return child, log, port, home


def _wait_healthy(child, port: int, timeout_s: float = 90) -> None:
    import requests

    def healthy():
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return child.poll() is not None  # exited: stop waiting, the asserts below say why
    _wait(healthy, timeout_s, "registry serve's MLflow to answer /health")


@pytest.mark.parametrize("phase", ["waiting for S3", "starting mlflow", pytest.param("serving", marks=pytest.mark.slow)])
def test_sigterm_stops_registry_serve_cleanly(local_s3, tmp_path, phase):
    """`registry serve` (compose's MLflow): SIGTERM while it waits for S3, while mlflow starts, or
    while it serves stops mlflow and its uvicorn workers and exits 0, with no traceback."""
    from spelltransfer.registry import processes

    s3_port = processes.free_port() if phase == "waiting for S3" else None
    child, log, port, home = _start_registry_serve(local_s3, tmp_path, s3_port=s3_port)
    started: list = []
    try:
        if phase == "waiting for S3":
            deadline = time.monotonic() + 10  # the message, or (a version without it) surely in the wait
            _wait(lambda: "waiting for S3" in log.read_text() or child.poll() is not None
                  or time.monotonic() > deadline, 30, "serve to wait for S3")
            time.sleep(0.5)
        elif phase == "starting mlflow":
            _wait(lambda: "bucket models" in log.read_text() or child.poll() is not None, 30, "serve to start mlflow")
            time.sleep(0.5)  # mlflow is importing: no handler of its own yet
        else:
            _wait_healthy(child, port)
            assert len(_descendants(child.pid)) >= 3, "mlflow's uvicorn and its two workers"
        assert child.poll() is None, log.read_text()[-3000:]
        started = _descendants(child.pid)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        left = {process.pid: process for process in [*_processes_naming(str(home)), *started]
                if process.is_running() and process.status() != "zombie"}
        for process in left.values():
            process.kill()
    output = log.read_text()
    assert child.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert not left, f"still running after SIGTERM: {sorted(left)}"


def test_registry_serve_refuses_a_non_loopback_host_without_a_login(local_s3, tmp_path):
    from spelltransfer.registry import processes

    child, log, port, _ = _start_registry_serve(local_s3, tmp_path, host="0.0.0.0", s3_port=processes.free_port())
    try:
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    output = log.read_text()
    assert child.returncode == 2, output[-2000:]
    assert "SPELLTRANSFER_MLFLOW_ADMIN_PASSWORD_FILE" in output and "Traceback" not in output, output[-2000:]


@pytest.mark.slow
def test_registry_serve_with_a_login_refuses_anonymous_requests(local_s3, tmp_path):
    import requests

    password = "Pw-" + os.urandom(12).hex()
    (tmp_path / "mlflow_password").write_text(password + "\n")
    child, log, port, _ = _start_registry_serve(
        local_s3, tmp_path, SPELLTRANSFER_MLFLOW_ADMIN_PASSWORD_FILE=str(tmp_path / "mlflow_password"))
    try:
        _wait_healthy(child, port)
        assert child.poll() is None, log.read_text()[-3000:]
        url = f"http://127.0.0.1:{port}"
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        artifact = f"{url}/api/2.0/mlflow-artifacts/artifacts/champion/adapter_model.safetensors"
        anonymous = [requests.get(search, timeout=10), requests.put(artifact, data=b"evil", timeout=10),
                     requests.get(artifact, timeout=10), requests.get(search, auth=("admin", "wrong"), timeout=10)]
        assert [r.status_code for r in anonymous] == [401] * 4, [(r.status_code, r.text[:80]) for r in anonymous]
        from spelltransfer.registry.mlflow_auth import apply_client_password_file

        client_env = {"SPELLTRANSFER_MLFLOW_PASSWORD_FILE": str(tmp_path / "mlflow_password")}
        apply_client_password_file(client_env)  # what the CLI does for every client command
        login = (client_env["MLFLOW_TRACKING_USERNAME"], client_env["MLFLOW_TRACKING_PASSWORD"])
        assert requests.get(search, auth=login, timeout=10).status_code == 200
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert password not in log.read_text()


def test_local_registry_stack_is_loopback_only(tmp_path):
    """The embedded MLflow server has no login: the stack refuses to bind anything but loopback."""
    from pydantic import ValidationError

    from spelltransfer.registry.config import RegistryConfig

    for host in ("127.0.0.1", "::1", "localhost"):
        assert RegistryConfig(home=tmp_path, host=host).host == host
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        with pytest.raises(ValidationError, match="loopback only"):
            RegistryConfig(home=tmp_path, host=host)
