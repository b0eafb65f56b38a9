"""Copies in the artifact store made and removed: the background uploads of a training run,
finishing the ones a run left pending, pushing a past run's files, deleting runs' copies.

Each copy is confirmed in the database only once the bytes that streamed matched the recorded
size and sha256 (see `ArtifactStore.upload`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tracker import checkpoint_files as files
from tracker.artifacts import (
    ArtifactStore,
    FileChanged,
    Progress,
    checkpoint_key,
    in_store,
    scrub,
    shown,
)

if TYPE_CHECKING:
    from tracker.records import CheckpointRecord
    from tracker.store.run_store import Store


# -- uploads during a run -----------------------------------------------------------------------


UPLOADER_IDLE_S = 1.0  # an idle upload thread ends after this long


@dataclass
class _Job:
    src: Path
    key: str
    size: int
    sha256: str


class Uploader:
    """Copies files to the artifact store on a worker thread, so training never waits on it;
    `on_done(key, sha256)` confirms each copy (in the database)."""

    def __init__(self, store: ArtifactStore, on_done: Callable[[str, str], None]) -> None:
        self.store = store
        self._on_done = on_done
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failed: list[str] = []
        self.pending = 0

    def submit(self, src: Path, key: str, size: int, sha256: str) -> None:
        with self._lock:
            self.pending += 1
            self._jobs.put(_Job(src, key, size, sha256))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="tracker-uploads", daemon=True
                )
                self._thread.start()

    def _next(self) -> _Job | None:
        """The next job, or None once the queue stayed empty for a while: the thread then ends,
        so a sweep of many fits keeps no idle threads (`submit` starts a new one)."""
        while True:
            try:
                return self._jobs.get(timeout=UPLOADER_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._thread = None
                        return None

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                self.store.upload(job.src, job.key, job.size, job.sha256)
                self._on_done(job.key, job.sha256)
            except FileChanged:
                pass  # overwritten by a later save, whose own upload follows
            except Exception as e:  # noqa: BLE001 - reported when the run ends
                message = scrub(str(e), self.store.location)
                self.failed.append(f"{job.src}: {type(e).__name__}: {message}")
            finally:
                with self._lock:
                    self.pending -= 1
                self._jobs.task_done()

    def wait(self) -> int:
        """Wait for every submitted upload (polling, so Ctrl-C still reaches the main thread);
        how many failed."""
        while self.pending:
            time.sleep(0.05)
        return len(self.failed)


# -- after a run: finishing, pushing, deleting --------------------------------------------------


@dataclass
class UploadReport:
    uploaded: int = 0
    problems: list[str] = field(default_factory=list)


def _upload_recorded(
    store: Store, ck: CheckpointRecord, target: ArtifactStore, key: str, progress: Progress | None
) -> str | None:
    """Upload one intact checkpoint and confirm it; the reason when it cannot be done."""
    st = files.state(ck)
    if st != files.OK:
        return (
            f"checkpoint {ck.path} (epoch {ck.epoch}) is {st} here: its upload cannot be finished"
        )
    try:
        target.upload(Path(ck.path), key, ck.size, ck.sha256, progress)
    except Exception as e:  # noqa: BLE001 - each file's failure is reported, the others go on
        return f"{ck.path}: {type(e).__name__}: {scrub(str(e), target.location)}"
    store.record_upload(ck.id, artifact_root=target.root, artifact_key=key)
    return None


def finish_uploads(store: Store, *, progress: Progress | None = None) -> UploadReport:
    """Finish the uploads a run left pending (its process was killed, or the store was away),
    from the files still intact on this machine, to the root each was meant for."""
    report = UploadReport()
    newest: dict[tuple[str, str], int] = {}
    for ck in store.pending_uploads():
        assert ck.artifact_root is not None and ck.artifact_key is not None
        if (ck.run_id, ck.path) not in newest:
            for other in store.checkpoints(ck.run_id):
                newest[(ck.run_id, other.path)] = other.id
        if newest[(ck.run_id, ck.path)] != ck.id:
            continue  # its file was overwritten by a later save of the run, which is uploaded
        target = ArtifactStore(ck.artifact_root)
        problem = _upload_recorded(store, ck, target, ck.artifact_key, progress)
        if problem:
            report.problems.append(problem)
        else:
            report.uploaded += 1
    return report


def push_run(
    store: Store, run: str, location: str, *, progress: Progress | None = None
) -> UploadReport:
    """Upload the run's checkpoints that are intact here and have no confirmed copy yet."""
    run_id = store.get_run(run).id
    target = ArtifactStore(location)
    report = UploadReport()
    for ck in store.checkpoints(run_id):
        if ck.uploaded_at is not None and in_store(ck):
            continue
        key = ck.artifact_key or checkpoint_key(run_id, ck.sha256, ck.path)
        problem = _upload_recorded(store, ck, target, key, progress)
        if problem:
            report.problems.append(problem)
        else:
            report.uploaded += 1
    return report


def run_roots(store: Store, run_ids: list[str]) -> dict[str, set[str]]:
    """The artifact-store roots each run's checkpoints were copied to."""
    roots: dict[str, set[str]] = {}
    for run_id in run_ids:
        found = {ck.artifact_root for ck in store.checkpoints(run_id) if ck.artifact_root}
        if found:
            roots[run_id] = found
    return roots


def delete_copies(roots: dict[str, set[str]]) -> list[str]:
    """Delete each run's folder in its artifact stores; the problems met (a store that cannot be
    reached does not keep the runs from being deleted from the database)."""
    problems = []
    for run_id, found in roots.items():
        for root in found:
            try:
                ArtifactStore(root).delete_run(run_id)
            except Exception as e:  # noqa: BLE001
                problems.append(
                    f"{shown(root)}/{run_id}: {type(e).__name__}: {scrub(str(e), root)}"
                )
    return problems
