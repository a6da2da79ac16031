"""spelltransfer.atomic: whole files/folders or the old ones, never half, and no temporaries left."""

import json
import os
import stat

import pytest

from spelltransfer.atomic import (
    atomic_path, open_atomic, replace_dir, staged_dir, write_bytes_atomic, write_json_atomic, write_text_atomic,
)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_writes_content_and_leaves_no_temp(tmp_path):
    write_bytes_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_text_atomic(tmp_path / "b.txt", "héllo\n")
    write_json_atomic(tmp_path / "c.json", {"b": 1, "a": [1, 2]}, indent=2, sort_keys=True)
    write_text_atomic(tmp_path / "d.txt", "no fsync", fsync=False)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "c.json").read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2)
    assert (tmp_path / "d.txt").read_text() == "no fsync"
    assert _names(tmp_path) == ["a.bin", "b.txt", "c.json", "d.txt"]


def test_overwrites_and_uses_ordinary_permissions(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0o600
    assert _names(tmp_path) == ["x.txt"]


def test_failure_mid_write_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"ok": true}')
    with pytest.raises(TypeError):
        write_json_atomic(path, {"fine": 1, "bad": object()})  # json.dump fails after writing a prefix
    assert path.read_text() == '{"ok": true}'
    assert _names(tmp_path) == ["state.json"]

    with pytest.raises(RuntimeError), open_atomic(path) as handle:
        handle.write("partial")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == '{"ok": true}'
    assert _names(tmp_path) == ["state.json"]


def test_atomic_path_for_writers_that_open_the_file(tmp_path):
    path = tmp_path / "model.gguf"
    with atomic_path(path) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".model.gguf.")
        temp.write_bytes(b"GGUF")
    assert path.read_bytes() == b"GGUF"
    with pytest.raises(ValueError), atomic_path(path) as temp:
        temp.write_bytes(b"half")
        raise ValueError("writer failed")
    assert path.read_bytes() == b"GGUF"
    assert _names(tmp_path) == ["model.gguf"]


def test_staged_dir_creates_and_replaces_folder(tmp_path):
    final = tmp_path / "adapter"
    with staged_dir(final) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".adapter.") and not any(staging.iterdir())
        (staging / "weights").write_text("v1")
    assert _names(final) == ["weights"] and (final / "weights").read_text() == "v1"

    with staged_dir(final) as staging:
        (staging / "weights").write_text("v2")
        (staging / "config").write_text("c")
    assert _names(final) == ["config", "weights"] and (final / "weights").read_text() == "v2"
    assert _names(tmp_path) == ["adapter"]  # no staging or moved-aside old folder left


def test_staged_dir_exception_keeps_old_folder(tmp_path):
    final = tmp_path / "adapter"
    final.mkdir()
    (final / "weights").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(final) as staging:
        (staging / "weights").write_text("half")
        raise RuntimeError("crash while saving")
    assert _names(final) == ["weights"] and (final / "weights").read_text() == "old"
    assert _names(tmp_path) == ["adapter"]


def test_staged_dir_prefix_and_replace_dir(tmp_path):
    with pytest.raises(KeyError), staged_dir(tmp_path / "ds", prefix=".ds.build-") as staging:
        assert staging.name.startswith(".ds.build-")
        raise KeyError("x")
    assert _names(tmp_path) == []

    built = tmp_path / "elsewhere"
    built.mkdir()
    (built / "f").write_text("new")
    final = tmp_path / "out"
    final.mkdir()
    (final / "stale").write_text("old")
    replace_dir(built, final)
    assert _names(final) == ["f"] and _names(tmp_path) == ["out"]
