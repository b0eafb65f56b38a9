"""The artifact store: where a run's files are kept so that any machine can restore them.

A store is a root (a local or shared folder, or any fsspec URL: `s3://bucket/prefix`, `gs://...`)
and keys under it, `<run id>/...`. The database records, per checkpoint, the root without
credentials, the key, and when the copy was confirmed; credentials come only from the protocol's
own sources (environment, config files). Every transfer streams in chunks and hashes as it goes,
so memory stays flat for any file size and no copy is confirmed or restored unless its size and
sha256 match the record.

fsspec (and a protocol's package such as s3fs) is imported only when a file is moved, never by
the query commands.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tracker import checkpoint_files as files
from tracker.checkpoint_files import CHUNK
from tracker.config import default_artifacts_dir, shown
from tracker.errors import CheckpointError, TrackerError

if TYPE_CHECKING:
    from tracker.records import CheckpointRecord

ENV_VAR = "TRACKER_ARTIFACTS"
PROGRESS_MIN_BYTES = 64 << 20  # smaller fetches end before a bar would be read
WRITE_BLOCK = 8 << 20  # a remote file's buffer (S3 multipart parts are at least 5 MiB)

Progress = Callable[[int], None]


class ArtifactError(TrackerError):
    """A copy in the artifact store could not be written, read or trusted."""


class FileChanged(ArtifactError):
    """The file no longer holds the recorded bytes (a later save overwrote it): a newer record
    carries its upload instead."""


# -- where --------------------------------------------------------------------------------------


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def store_location(
    artifacts: str | os.PathLike[str] | None,
    artifacts_dir: str | os.PathLike[str] | None,
    db_url: str,
) -> str:
    """The artifact store's root: `artifacts`, then `TRACKER_ARTIFACTS`, then the folder of
    `artifacts_dir` / `TRACKER_ARTIFACTS_DIR` / beside the SQLite file (the older, folder-only
    spellings, which stay the default)."""
    chosen = str(artifacts) if artifacts is not None else os.environ.get(ENV_VAR)
    if chosen:
        return chosen if is_url(chosen) else str(_local(chosen))
    return str(local_folder(artifacts_dir, db_url))


def local_folder(artifacts_dir: str | os.PathLike[str] | None, db_url: str) -> Path:
    """The local folder the callback writes its best-weights file to before any upload."""
    base = Path(artifacts_dir) if artifacts_dir is not None else default_artifacts_dir(db_url)
    return base.expanduser().resolve()


def clean_root(location: str) -> str:
    """The root as the database keeps it: no user, password or secret-looking query values."""
    if not is_url(location):
        return location
    parts = urlsplit(location)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{parts.path}"  # `://` kept whatever the scheme


def scrub(text: str, location: str) -> str:
    """`text` (a library's error message) with every credential-like part of `location` masked,
    however the library quoted it."""
    if is_url(location):
        parts = urlsplit(location)
        secrets = [parts.username, parts.password]
        secrets += [v for q in parts.query.split("&") for v in q.split("=", 1)[1:]]
        for secret in filter(None, secrets):
            text = text.replace(secret, "***")
    return shown(text)


def _local(location: str) -> Path:
    if location.startswith("file://"):
        location = location[len("file://") :]
    return Path(location).expanduser().resolve()


def best_key(run_id: str) -> str:
    return f"{run_id}/best.weights.h5"


def checkpoint_key(run_id: str, sha256: str, path: str) -> str:
    """Content-addressed under the run, so each recorded version of a file has its own copy."""
    return f"{run_id}/checkpoints/{sha256[:16]}/{Path(path).name}"


# -- one store ----------------------------------------------------------------------------------


class ArtifactStore:
    """One root and the filesystem that reaches it."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.root = clean_root(location)
        self._fs: Any = None
        self._base = ""

    @property
    def local(self) -> Path | None:
        return None if is_url(self.location) else _local(self.location)

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            from fsspec.core import url_to_fs  # type: ignore[import-untyped]

            try:
                self._fs, self._base = url_to_fs(self.location)
            except (ImportError, ValueError) as e:
                raise ArtifactError(f"artifact store {shown(self.location)}: {e}") from e
        return self._fs, self._base

    def path(self, key: str) -> str:
        local = self.local
        if local is not None:
            return str(local / key)
        _, base = self._filesystem()
        return base.rstrip("/") + "/" + key

    def uri(self, key: str) -> str:
        return self.root.rstrip("/") + "/" + key

    def size(self, key: str) -> int | None:
        """The stored copy's size, or None when there is none (a local root needs no fsspec)."""
        local = self.local
        if local is not None:
            try:
                return (local / key).stat().st_size
            except OSError:
                return None
        fs, _ = self._filesystem()
        try:
            return int(fs.size(self.path(key)))
        except (FileNotFoundError, OSError):
            return None

    def upload(
        self, src: Path, key: str, size: int, sha256: str, progress: Progress | None = None
    ) -> None:
        """Copy `src` to `key`, hashing as it streams; a file that no longer holds the recorded
        bytes is not stored (a local copy is renamed into place, a remote one is discarded)."""
        local = self.local
        if local is not None:
            dest = local / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.partial")
            try:
                with open(tmp, "wb") as out:
                    _stream(src, out, size, sha256, progress)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            return
        fs, _ = self._filesystem()
        if getattr(fs, "auto_mkdir", None) is False:  # a folder behind a URL (file://, slowfile)
            fs.makedirs(self.path(key).rsplit("/", 1)[0], exist_ok=True)
        out = fs.open(self.path(key), "wb", block_size=WRITE_BLOCK)
        try:
            _stream(src, out, size, sha256, progress)
        except BaseException:
            _abandon(fs, out, self.path(key))
            raise
        out.close()

    def download(
        self, key: str, to: Path, size: int, sha256: str, progress: Progress | None = None
    ) -> Path:
        """Fetch `key` to `to` through a temporary file renamed only once size and sha256 match."""
        tmp = to.with_name(f".{to.name}.partial")
        try:
            with self._open_read(key) as src, open(tmp, "wb") as dst:
                got = files.copy_hashed(src, dst, size, progress)
            if got != (size, sha256):
                raise CheckpointError(
                    f"refusing to restore: the artifact store's copy {shown(self.uri(key))} does "
                    "not match the recorded size and sha256"
                )
            os.replace(tmp, to)
        finally:
            tmp.unlink(missing_ok=True)
        return to

    def _open_read(self, key: str) -> Any:
        local = self.local
        if local is not None:
            return open(local / key, "rb")
        fs, _ = self._filesystem()
        return fs.open(self.path(key), "rb", block_size=CHUNK)

    def delete_run(self, run_id: str) -> bool:
        """Remove everything under `<run id>/`; whether there was anything."""
        local = self.local
        if local is not None:
            import shutil

            folder = local / run_id
            if not folder.is_dir():
                return False
            shutil.rmtree(folder)
            return True
        fs, _ = self._filesystem()
        target = self.path(run_id)
        if not fs.exists(target):
            return False
        fs.rm(target, recursive=True)
        return True


def _abandon(fs: Any, out: Any, path: str) -> None:
    """Throw a partial upload away instead of completing it: a buffered remote file aborts its
    multipart upload (and must not flush when collected); anything else is closed and removed."""
    try:
        out.discard()
        out.closed = True
        return
    except Exception:  # noqa: BLE001 - no discard here (a plain file): remove it instead
        pass
    try:
        out.close()
        fs.rm(path)
    except Exception:  # noqa: BLE001 - the row stays unconfirmed, so nothing trusts this copy
        pass


def _stream(src: Path, out: Any, size: int, sha256: str, progress: Progress | None) -> None:
    with open(src, "rb") as f:
        got = files.copy_hashed(f, out, size, progress)
    if got != (size, sha256):
        raise FileChanged(f"{src} changed after it was recorded; its copy is not stored")


def store_for(ck: CheckpointRecord) -> ArtifactStore | None:
    """Where this checkpoint's copy is read from: `TRACKER_ARTIFACTS` when it holds the key (the
    same shared folder can be mounted at another path here), else the root it was written to."""
    if ck.artifact_key is None or ck.artifact_root is None:
        return None
    here = os.environ.get(ENV_VAR)
    if here and clean_root(here) != ck.artifact_root:
        configured = ArtifactStore(here)
        try:
            if configured.size(ck.artifact_key) is not None:
                return configured
        except TrackerError:
            pass
    return ArtifactStore(ck.artifact_root)


# -- where a checkpoint can be had --------------------------------------------------------------

LOCAL, STORE, BOTH, NEITHER = "local", "store", "both", "neither"


def in_store(ck: CheckpointRecord) -> bool:
    """A confirmed copy of the recorded size is there (its hash is checked when it is fetched)."""
    if ck.uploaded_at is None:
        return False
    store = store_for(ck)
    if store is None or ck.artifact_key is None:
        return False
    try:
        return store.size(ck.artifact_key) == ck.size
    except Exception:  # noqa: BLE001 - an unreachable store or missing protocol package
        return False


def availability(ck: CheckpointRecord, local_state: str) -> str:
    local = local_state == "ok"
    stored = in_store(ck)
    return BOTH if local and stored else LOCAL if local else STORE if stored else NEITHER


def checkpoint_places(cks: list[CheckpointRecord]) -> list[tuple[str, str]]:
    """Each checkpoint's state on disk now (`ok`, `missing`, `modified`: its file is hashed) and
    where it can be had (`availability`)."""
    out = []
    for ck in cks:
        st = files.state(ck)
        out.append((st, availability(ck, st)))
    return out


def first_obtainable(cks: list[CheckpointRecord]) -> tuple[CheckpointRecord | None, list[str]]:
    """Like `files.first_intact`, but a checkpoint whose local file is gone or changed
    still counts when the artifact store holds its copy."""
    _, problems = files.first_intact(cks)
    for ck in cks:
        if files.state(ck) == files.OK or in_store(ck):
            return ck, problems
    if any(ck.artifact_key for ck in cks):
        problems.append("and the artifact store holds no confirmed copy")
    return None, problems


def verified(cks: list[CheckpointRecord]) -> CheckpointRecord:
    """`files.verified`, with the artifact store's copies as a second place to look."""
    ck, problems = first_obtainable(cks)
    if ck is None:
        raise CheckpointError("refusing to restore: " + "; ".join(problems))
    return ck


@contextmanager
def local_copy(ck: CheckpointRecord) -> Iterator[Path]:
    """A verified local file of the checkpoint: its own file when intact, else a temporary
    copy fetched from the artifact store (removed afterwards)."""
    if files.state(ck) == files.OK or not in_store(ck):
        yield Path(ck.path)
        return
    store = store_for(ck)
    assert store is not None and ck.artifact_key is not None
    with tempfile.TemporaryDirectory(prefix="tracker-restore-") as tmp:
        to = Path(tmp) / Path(ck.path).name
        with _progress(ck.size, f"Fetching {to.name}") as advance:
            store.download(ck.artifact_key, to, ck.size, ck.sha256, advance)
        yield to


@contextmanager
def _progress(length: int, label: str) -> Iterator[Progress | None]:
    """click's progress bar on stderr for a large fetch on a terminal; nothing otherwise."""
    if length < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    import click

    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


def copy_out(
    ck: CheckpointRecord, to: Path, *, force: bool = False, progress: Progress | None = None
) -> tuple[Path, str]:
    """Copy the checkpoint to `to` from its local file when that is intact, else from the artifact
    store; returns the file and where it came from (its path or URI)."""
    to = to.expanduser().resolve()
    if files.state(ck) == files.OK or not in_store(ck):
        return files.copy_verified(ck, to, force=force, progress=progress), ck.path
    files.check_target(ck, to, force=force)
    store = store_for(ck)
    assert store is not None and ck.artifact_key is not None
    store.download(ck.artifact_key, to, ck.size, ck.sha256, progress)
    return to, shown(store.uri(ck.artifact_key))
