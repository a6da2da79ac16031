"""Generated protobuf code matches the .proto files (it is generated, never edited)."""

from __future__ import annotations

import shutil
from pathlib import Path

from spelltransfer.platform import protos


def test_generated_code_is_fresh(tmp_path):
    files = protos.generate(tmp_path)
    fresh = tmp_path / "spelltransfer" / "_proto"
    assert {p.name for p in files} >= {"trainer_pb2.py", "trainer_pb2_grpc.py", "sweep_pb2.py", "evaluator_pb2.py"}
    assert not protos.is_stale(), "stamp does not match the .proto files: run `make proto`"
    for path in files:
        installed = protos.PACKAGE_ROOT / "_proto" / path.relative_to(fresh)
        assert installed.read_bytes() == path.read_bytes(), f"{installed} differs from freshly generated code"


def test_changed_proto_is_detected_as_stale(tmp_path, monkeypatch):
    copy = tmp_path / "v1"
    shutil.copytree(protos.PROTO_DIR, copy)
    monkeypatch.setattr(protos, "PROTO_DIR", copy)
    assert not protos.is_stale()
    trainer = Path(copy / "trainer.proto")
    trainer.write_text(trainer.read_text().replace("int32 launches = 8;", "int32 launches = 8;\n  int32 extra = 99;"))
    assert protos.is_stale()


def test_generated_messages_round_trip():
    trial = protos.trainer_pb2.Trial(trial_id="t1", state=protos.trainer_pb2.TRIAL_RUNNING, metrics={"a": 1.5})
    again = protos.trainer_pb2.Trial.FromString(trial.SerializeToString())
    assert again.trial_id == "t1" and again.metrics["a"] == 1.5
    assert protos.sweep_pb2.DESCRIPTOR.package == "spelltransfer.v1"
