"""Atomic writes: a reader, or a restart after a crash, sees the old file/folder or the new one, never half of one.

Everything is built under a temporary name in the *same* folder as the target (so on the same
filesystem, where ``os.replace`` is an atomic rename) and renamed into place only once complete;
on failure the temporary is removed and the target is left as it was. Temporaries start with a
dot (``.NAME.xxxx.tmp``, ``.NAME.xxxx``), so listings that skip dot-names never see them.

- ``write_bytes_atomic`` / ``write_text_atomic`` / ``write_json_atomic``: a whole file at once.
- ``open_atomic``: a file written bit by bit through a handle; ``atomic_path``: a temp path for
  writers that open the file themselves (matplotlib, GGUF).
- ``staged_dir``: a folder built in a staging sibling and swapped in; ``replace_dir``: the swap
  alone, for a folder already built elsewhere on the same filesystem.

``fsync=True`` (the default) flushes the data to disk before the rename, so that a power loss
cannot leave the new name pointing at empty blocks; callers writing throwaway files may pass False.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, briefly, for every thread)."""
    try:
        with open("/proc/self/status", encoding="utf-8", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path`` (an empty file exists there); on normal exit it replaces ``path``.

    For writers that want a file name rather than a handle. On an exception the temp is removed
    and ``path`` is untouched. The file gets the usual permissions (0o666 less the umask).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0o600
        os.close(fd)
        yield temp
        if fsync:
            _fsync_file(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike, mode: str = "w", *, fsync: bool = True, **open_kwargs) -> Iterator[IO]:
    """``open(path, mode)`` on a temp file that replaces ``path`` when the block ends without error.

    ``mode`` is ``"w"`` (text, UTF-8 unless ``encoding=`` says otherwise) or ``"wb"``.
    """
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path, fsync=False) as temp:
        with open(temp, mode, **open_kwargs) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    with open_atomic(path, "wb", fsync=fsync) as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = True, encoding: str = "utf-8") -> Path:
    with open_atomic(path, "w", fsync=fsync, encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, fsync: bool = True, **json_kwargs) -> Path:
    """``json.dump(obj, **json_kwargs)`` into ``path`` atomically (no trailing newline, like ``json.dump``)."""
    with open_atomic(path, "w", fsync=fsync) as handle:
        json.dump(obj, handle, **json_kwargs)
    return Path(path)


def replace_dir(built: str | os.PathLike, final_dir: str | os.PathLike) -> Path:
    """Move the folder ``built`` to ``final_dir`` (same filesystem); an existing ``final_dir`` is
    moved aside first (``.NAME-old.xxxx/``, beside it) and deleted once the new one is in place.

    If the second rename fails the old folder is put back.
    """
    built, final_dir = Path(built), Path(final_dir)
    if not final_dir.exists():
        os.replace(built, final_dir)
        return final_dir
    old = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}-old.", dir=final_dir.parent))
    try:
        os.replace(final_dir, old / final_dir.name)
        try:
            os.replace(built, final_dir)
        except BaseException:
            os.replace(old / final_dir.name, final_dir)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return final_dir


@contextlib.contextmanager
def staged_dir(final_dir: str | os.PathLike, *, prefix: str | None = None,
               install: Callable[[Path, Path], Any] = replace_dir) -> Iterator[Path]:
    """Yield a fresh, empty staging folder beside ``final_dir``; fill it in the block.

    On normal exit it becomes ``final_dir`` (``replace_dir``: an existing one is moved aside, then
    deleted); on an exception it is deleted and ``final_dir`` is untouched. ``prefix`` names the
    staging folder (default ``.NAME.``); the parent of ``final_dir`` must exist. ``install(staging,
    final_dir)`` replaces the whole-folder swap where a caller moves things in its own way (e.g.
    file by file into a folder that stays); whatever it leaves of the staging folder is deleted.
    """
    final_dir = Path(final_dir)
    staging = Path(tempfile.mkdtemp(prefix=prefix or f".{final_dir.name}.", dir=final_dir.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0o700; the result is an ordinary folder
        yield staging
        install(staging, final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
