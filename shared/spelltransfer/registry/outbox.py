"""The artifact outbox: nothing a run produced is lost when S3 or MLflow is down.

``submit(path, run_id, artifact_path)`` copies the file or folder into the outbox at once (the
trainer may rotate its checkpoints right after) and returns; a background thread uploads it to the
run's artifact store, retrying with exponential backoff and jitter. Each file is verified — the
server-side size from a listing, then a re-download hashed with SHA-256 against the hash taken at
submit time — and only then is the local copy deleted; a receipt stays in ``done/``.

Everything is on disk, so a new ``Outbox`` on the same folder (a restarted trainer, or
``spelltransfer registry outbox drain``) resumes where the last one stopped. Several processes may
share one outbox: an entry is worked on under an exclusive ``flock``.

Layout::

    <root>/entries/<id>/manifest.json    run, artifact path, files with size + sha256 + done flag,
                                         attempts, next attempt time, last error
    <root>/entries/<id>/payload/...      the copied file(s)
    <root>/done/<id>.json                receipt after every file was verified
    <root>/.staging/                     half-copied submissions (removed on start)

Uploads go through the tracking server's artifact proxy (``mlflow-artifacts:`` URIs) with plain
HTTP calls whose timeouts this module owns (MLflow's client would retry for minutes inside one
call); other artifact URIs (``file:``, ``s3:``…) use MLflow's artifact repositories.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import posixpath
import random
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

from spelltransfer.registry.errors import RegistryError
from spelltransfer.registry.atomic import write_json_atomic

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class UploadError(RegistryError):
    """One upload attempt failed (server down, rejected, or verification mismatch)."""


@dataclass(frozen=True)
class OutboxStats:
    pending_entries: int
    pending_files: int
    pending_bytes: int
    done_entries: int
    last_errors: list[str]


def _auth_headers() -> dict[str, str]:
    # The same variables MLflow's own client honours, so an auth-enabled server works too.
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    return {}


def _auth() -> tuple[str, str] | None:
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return (user, password) if user and password else None


class _ProxyStore:
    """Upload/list/download through ``{tracking}/api/2.0/mlflow-artifacts/artifacts`` with our timeouts."""

    def __init__(self, tracking_uri: str, artifact_uri: str, timeout: float):
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

        self.base = MlflowArtifactsRepository.resolve_uri(artifact_uri, tracking_uri)
        self.list_url, tail = self.base.split("/mlflow-artifacts/artifacts", 1)
        self.list_url += "/mlflow-artifacts/artifacts"
        self.root = tail.strip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update(_auth_headers())
        self.session.auth = _auth()

    def _check(self, response: requests.Response, what: str) -> None:
        if response.status_code >= 500:
            # The proxy hides the S3 error; say where to look instead of a bare 500.
            raise UploadError(f"{what}: HTTP {response.status_code} from the tracking server's artifact proxy "
                              f"(S3 behind it is down or rejects the server's keys; see the MLflow server log)")
        if response.status_code >= 400:
            raise UploadError(f"{what}: HTTP {response.status_code} {response.text[:300].strip()}")

    def upload(self, local: Path, remote: str) -> None:
        with open(local, "rb") as handle:
            response = self.session.put(
                f"{self.base}/{remote}", data=handle, timeout=self.timeout,
                headers={"Content-Type": "application/octet-stream"},
            )
        self._check(response, f"upload {remote}")

    def remote_size(self, remote: str) -> int | None:
        parent = posixpath.dirname(remote)
        path = posixpath.join(self.root, parent) if parent else self.root
        response = self.session.get(self.list_url, params={"path": path}, timeout=self.timeout)
        self._check(response, f"list {parent or '/'}")
        for item in response.json().get("files", []):
            if item["path"] == posixpath.basename(remote) and not item.get("is_dir"):
                return int(item["file_size"]) if "file_size" in item else None
        raise UploadError(f"verify {remote}: not listed after upload")

    def remote_sha256(self, remote: str) -> str:
        digest = hashlib.sha256()
        with self.session.get(f"{self.base}/{remote}", stream=True, timeout=self.timeout) as response:
            self._check(response, f"download {remote}")
            for block in response.iter_content(_CHUNK):
                digest.update(block)
        return digest.hexdigest()


class _RepositoryStore:
    """Any other artifact URI (``file:``, ``s3:``, ``gs:``…) through MLflow's repositories."""

    def __init__(self, artifact_uri: str):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        self.repository = get_artifact_repository(artifact_uri)

    def upload(self, local: Path, remote: str) -> None:
        parent = posixpath.dirname(remote)
        if posixpath.basename(remote) != local.name:
            raise UploadError(f"internal: {local.name} uploaded as {remote}")
        self.repository.log_artifact(str(local), parent or None)

    def remote_size(self, remote: str) -> int | None:
        parent = posixpath.dirname(remote)
        for info in self.repository.list_artifacts(parent or None):
            if info.path == remote and not info.is_dir:
                return info.file_size
        raise UploadError(f"verify {remote}: not listed after upload")

    def remote_sha256(self, remote: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            local = self.repository.download_artifacts(remote, tmp)
            return sha256_of(Path(local))


class Outbox:
    """A durable upload queue for run artifacts; see the module docstring.

    ``tracking_uri`` defaults to ``mlflow.get_tracking_uri()`` at construction. ``start=False``
    skips the background thread (call ``drain_once``/``flush`` yourself).
    """

    def __init__(
        self,
        root: str | Path,
        tracking_uri: str | None = None,
        *,
        start: bool = True,
        base_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        request_timeout_s: float = 60.0,
        poll_interval_s: float = 2.0,
    ):
        import mlflow

        self.root = Path(root)
        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self.base_delay_s, self.max_delay_s = base_delay_s, max_delay_s
        self.request_timeout_s, self.poll_interval_s = request_timeout_s, poll_interval_s
        for sub in ("entries", "done", ".staging"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # A crash mid-copy leaves only staging debris: the source was never acknowledged.
        for debris in (self.root / ".staging").iterdir():
            shutil.rmtree(debris, ignore_errors=True)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._artifact_uris: dict[str, str] = {}
        if start:
            self.start()

    # -- submitting ------------------------------------------------------------------------
    def submit(self, local_path: str | Path, run_id: str, artifact_path: str | None = None) -> str:
        """Copy ``local_path`` (file or folder) into the outbox; returns the entry id.

        Remote names follow ``MlflowClient.log_artifact(s)``: a file lands at
        ``artifact_path/<name>``, a folder's contents under ``artifact_path/``.
        """
        source = Path(local_path)
        if not source.exists():
            raise RegistryError(f"outbox submit: {source} does not exist")
        if not run_id:
            raise RegistryError("outbox submit: run_id is empty")
        prefix = (artifact_path or "").strip("/")
        entry_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        staging = self.root / ".staging" / entry_id
        payload = staging / "payload"
        if source.is_dir():
            shutil.copytree(source, payload, symlinks=False)
            files = sorted(p for p in payload.rglob("*") if p.is_file())
            remote = [posixpath.join(prefix, p.relative_to(payload).as_posix()) if prefix
                      else p.relative_to(payload).as_posix() for p in files]
        else:
            payload.mkdir(parents=True)
            shutil.copy2(source, payload / source.name)
            files = [payload / source.name]
            remote = [posixpath.join(prefix, source.name) if prefix else source.name]
        manifest = {
            "id": entry_id, "run_id": run_id, "artifact_path": prefix, "source": str(source.resolve()),
            "tracking_uri": self.tracking_uri, "created_at": time.time(), "attempts": 0,
            "next_attempt_at": 0.0, "last_error": None,
            "files": [
                {"local": f.relative_to(payload).as_posix(), "remote": r, "size": f.stat().st_size,
                 "sha256": sha256_of(f), "done": False}
                for f, r in zip(files, remote)
            ],
        }
        write_json_atomic(staging / "manifest.json", manifest)
        os.replace(staging, self.root / "entries" / entry_id)  # the entry appears whole or not at all
        logger.info("outbox: queued %d file(s) for run %s under %r", len(files), run_id, prefix or "/")
        self._wake.set()
        return entry_id

    # -- inspecting ------------------------------------------------------------------------
    def _entry_dirs(self) -> list[Path]:
        return sorted(p for p in (self.root / "entries").iterdir() if p.is_dir())

    def _read_manifest(self, entry: Path) -> dict | None:
        try:
            return json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def pending(self) -> list[dict]:
        """Manifests of entries not yet verified, oldest first."""
        return [m for m in (self._read_manifest(e) for e in self._entry_dirs()) if m]

    def receipts(self) -> list[dict]:
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((self.root / "done").glob("*.json"))]

    def stats(self) -> OutboxStats:
        pending = self.pending()
        todo = [f for m in pending for f in m["files"] if not f["done"]]
        return OutboxStats(
            pending_entries=len(pending), pending_files=len(todo), pending_bytes=sum(f["size"] for f in todo),
            done_entries=len(list((self.root / "done").glob("*.json"))),
            last_errors=[m["last_error"] for m in pending if m.get("last_error")],
        )

    # -- uploading -------------------------------------------------------------------------
    def _artifact_uri(self, tracking_uri: str, run_id: str) -> str:
        key = f"{tracking_uri}|{run_id}"
        if key not in self._artifact_uris:
            if tracking_uri.startswith(("http://", "https://")):
                session = requests.Session()
                session.headers.update(_auth_headers())
                session.auth = _auth()
                try:
                    response = session.get(
                        f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                        timeout=self.request_timeout_s,
                    )
                except requests.RequestException as error:
                    raise UploadError(f"tracking server {tracking_uri} unreachable: {type(error).__name__}") from None
                if response.status_code >= 400:
                    raise UploadError(f"run {run_id}: HTTP {response.status_code} {response.text[:200]}")
                self._artifact_uris[key] = response.json()["run"]["info"]["artifact_uri"]
            else:
                from mlflow.tracking import MlflowClient

                self._artifact_uris[key] = MlflowClient(tracking_uri).get_run(run_id).info.artifact_uri
        return self._artifact_uris[key]

    def _store(self, manifest: dict):
        artifact_uri = self._artifact_uri(manifest["tracking_uri"], manifest["run_id"])
        if artifact_uri.startswith("mlflow-artifacts:") or artifact_uri.startswith(("http://", "https://")):
            return _ProxyStore(manifest["tracking_uri"], artifact_uri, self.request_timeout_s)
        return _RepositoryStore(artifact_uri)

    def _process(self, entry: Path, manifest: dict) -> None:
        """Upload and verify every file not yet done; each success is persisted at once."""
        store = self._store(manifest)
        for item in manifest["files"]:
            if item["done"]:
                continue
            local = entry / "payload" / item["local"]
            if sha256_of(local) != item["sha256"]:
                # The outbox copy itself changed: never upload data we cannot vouch for.
                raise UploadError(f"{local}: local copy no longer matches its submit-time sha256")
            try:
                store.upload(local, item["remote"])
                size = store.remote_size(item["remote"])
                if size is not None and size != item["size"]:
                    raise UploadError(f"verify {item['remote']}: size {size} != {item['size']}")
                remote_hash = store.remote_sha256(item["remote"])
            except requests.RequestException as error:
                raise UploadError(f"{item['remote']}: {type(error).__name__}: {error}") from None
            if remote_hash != item["sha256"]:
                raise UploadError(f"verify {item['remote']}: sha256 mismatch after upload")
            item["done"] = True
            item["verified_at"] = time.time()
            write_json_atomic(entry / "manifest.json", manifest)

    def _finish(self, entry: Path, manifest: dict) -> None:
        manifest["completed_at"] = time.time()
        write_json_atomic(self.root / "done" / f"{manifest['id']}.json", manifest)
        shutil.rmtree(entry, ignore_errors=True)
        logger.info("outbox: run %s %r verified (%d file(s)); local copy removed",
                    manifest["run_id"], manifest["artifact_path"] or "/", len(manifest["files"]))

    def _retry_delay(self, attempts: int) -> float:
        delay = min(self.max_delay_s, self.base_delay_s * (2 ** max(0, attempts - 1)))
        return delay * (0.5 + random.random() / 2)

    def drain_once(self, force: bool = False) -> int:
        """One pass over due entries (all entries if ``force``); returns how many are left."""
        left = 0
        for entry in self._entry_dirs():
            try:
                lock_handle = open(entry / ".lock", "a")
            except (FileNotFoundError, NotADirectoryError):
                continue  # finished by another process meanwhile
            with lock_handle:
                try:
                    fcntl.flock(lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    left += 1
                    continue
                manifest = self._read_manifest(entry)
                if manifest is None:
                    continue
                if (self.root / "done" / f"{manifest['id']}.json").exists():
                    shutil.rmtree(entry, ignore_errors=True)  # crashed between receipt and cleanup
                    continue
                if not force and manifest["next_attempt_at"] > time.time():
                    left += 1
                    continue
                try:
                    self._process(entry, manifest)
                except Exception as error:  # noqa: BLE001 - any failure means: keep the copy, retry later
                    manifest["attempts"] += 1
                    manifest["last_error"] = str(error)[:500]
                    delay = self._retry_delay(manifest["attempts"])
                    manifest["next_attempt_at"] = time.time() + delay
                    write_json_atomic(entry / "manifest.json", manifest)
                    logger.warning("outbox: run %s %r attempt %d failed (%s); retrying in %.1f s",
                                   manifest["run_id"], manifest["artifact_path"] or "/", manifest["attempts"],
                                   manifest["last_error"], delay)
                    left += 1
                    continue
                self._finish(entry, manifest)
        return left

    def _next_due_in(self) -> float:
        due = [m["next_attempt_at"] for m in self.pending()]
        if not due:
            return self.poll_interval_s
        return max(0.05, min(self.poll_interval_s, min(due) - time.time()))

    # -- the background thread -------------------------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="spelltransfer-outbox", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                left = self.drain_once()
            except Exception:  # noqa: BLE001 - the uploader must never die; the next pass retries
                logger.exception("outbox: unexpected error in a drain pass")
                left = 1
            if left == 0:
                with self._idle:
                    self._idle.notify_all()
            self._wake.wait(self._next_due_in())
            self._wake.clear()

    def flush(self, timeout: float | None = None, run_id: str | None = None) -> bool:
        """Wait until every entry (of ``run_id``, if given) is uploaded and verified.

        False if ``timeout`` ran out first. Without a running thread, drains in this thread
        (honouring the backoff schedule).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while [m for m in self.pending() if run_id is None or m["run_id"] == run_id]:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self._thread and self._thread.is_alive():
                self._wake.set()
                with self._idle:
                    self._idle.wait(min(0.5, remaining) if remaining is not None else 0.5)
            else:
                self.drain_once()
                time.sleep(min(0.2, self._next_due_in()))
        return True

    def close(self, timeout: float | None = 0.0) -> bool:
        """Stop the thread after an optional ``flush(timeout)``; pending entries stay on disk."""
        flushed = self.flush(timeout) if timeout else not self.pending()
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=self.request_timeout_s + 5)
        return flushed

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- one shared outbox per process, for trackers -------------------------------------------------
OUTBOX_MODE_ENV = "SPELLTRANSFER_OUTBOX"  # "auto" (default): remote tracking URIs only; "off"; "on"
FLUSH_TIMEOUT_ENV = "SPELLTRANSFER_OUTBOX_FLUSH_S"
_shared: dict[str, Outbox] = {}
_shared_lock = threading.Lock()


def default_outbox_dir() -> Path:
    from spelltransfer.registry.config import OUTBOX_ENV, default_home

    return Path(os.environ.get(OUTBOX_ENV) or default_home() / "outbox")


def outbox_for(tracking_uri: str) -> Outbox | None:
    """The process-wide outbox a tracker should send artifacts through, or None to log directly.

    ``auto``: an outbox for http(s) tracking servers (which can be down), none for local
    ``sqlite:``/``file:`` stores (the artifact write is a local copy already). Folder:
    ``$SPELLTRANSFER_OUTBOX_DIR`` or ``<registry home>/outbox``.
    """
    mode = os.environ.get(OUTBOX_MODE_ENV, "auto").lower()
    if mode not in {"auto", "on", "off"}:
        raise RegistryError(f"{OUTBOX_MODE_ENV}={mode!r}: use auto, on or off")
    remote = tracking_uri.startswith(("http://", "https://"))
    if mode == "off" or (mode == "auto" and not remote):
        return None
    root = default_outbox_dir()
    with _shared_lock:
        key = f"{root.resolve()}|{tracking_uri}"
        if key not in _shared:
            _shared[key] = Outbox(root, tracking_uri)
        return _shared[key]


def flush_timeout_s() -> float:
    """How long a finishing run waits for its uploads (they stay queued after that)."""
    try:
        return float(os.environ.get(FLUSH_TIMEOUT_ENV, "120"))
    except ValueError:
        raise RegistryError(f"{FLUSH_TIMEOUT_ENV}={os.environ[FLUSH_TIMEOUT_ENV]!r}: not a number of seconds") from None
