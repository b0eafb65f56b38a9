"""Checkpoint files: the facts about one file that every part checks the same way.

A checkpoint row is a claim about a file: this path held these bytes (size, sha256) at that epoch.
Files live outside the database and can be overwritten (a fixed ModelCheckpoint `filepath`),
moved or deleted, so nothing is restored without checking the claim first. Here: a file's digest,
its state against its record, the format its suffix names, and a copy hashed as it is made.
Recording checkpoints during training is `tracker.training.checkpoint_recorder`; choosing one
to restore is `tracker.restore`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracker.errors import CheckpointError
from tracker.records import CheckpointRecord

OK, MISSING, MODIFIED = "ok", "missing", "modified"
OWN_SOURCE = "TrackingCallback"  # the callback's own best-weights copy
SUFFIX = {"model": ".keras", "weights": ".weights.h5"}  # by kind, for a file named otherwise
_LEGACY = (".h5", ".hdf5")
CHUNK = 1 << 20  # bytes read at a time when copying or hashing


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Size in bytes and sha256 hex digest of a file."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256") if hasattr(hashlib, "file_digest") else None
        if digest is None:  # Python 3.10
            h = hashlib.sha256()
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
            digest = h
    return os.path.getsize(path), digest.hexdigest()


def state(ck: CheckpointRecord) -> str:
    """`ok`, `missing` or `modified` (size checked first: it costs no read)."""
    path = Path(ck.path)
    if not path.is_file():
        return MISSING
    if path.stat().st_size != ck.size:
        return MODIFIED
    return OK if file_digest(path)[1] == ck.sha256 else MODIFIED


def _reason(ck: CheckpointRecord, st: str) -> str:
    what = "no longer exists" if st == MISSING else "was changed after it was recorded"
    return f"checkpoint {ck.path} (epoch {ck.epoch}) {what}"


def first_intact(cks: list[CheckpointRecord]) -> tuple[CheckpointRecord | None, list[str]]:
    """The first checkpoint whose file checks out, and what is wrong with those before it."""
    problems: list[str] = []
    for ck in cks:
        st = state(ck)
        if st == OK:
            return ck, problems
        problems.append(_reason(ck, st))
    return None, problems


def verified(cks: list[CheckpointRecord]) -> CheckpointRecord:
    """The first of `cks` (which all hold the same weights) whose file checks out: a missing or
    modified file is passed over for another copy, never for another epoch.

    Raises:
        CheckpointError: every one is missing or modified (with each reason).
    """
    ck, problems = first_intact(cks)
    if ck is None:
        raise CheckpointError("refusing to restore: " + "; ".join(problems))
    return ck


def copy_hashed(
    src: Any, dst: Any, size: int, progress: Callable[[int], None] | None
) -> tuple[int, str]:
    """Copy `src` to `dst` block by block; the bytes read and their sha256. Stops after the
    block that passes `size` (that block is not written): a larger file is already wrong."""
    h, got = hashlib.sha256(), 0
    for block in iter(lambda: src.read(CHUNK), b""):
        got += len(block)
        if got > size:
            break
        dst.write(block)
        h.update(block)
        if progress is not None:
            progress(len(block))
    return got, h.hexdigest()


# -- file formats and copying -------------------------------------------------------------------


def file_format(name: str) -> str | None:
    """The format Keras reads a file as, from its name: `.keras` (a zipped full model),
    `.weights.h5` (weights), `.h5` (legacy HDF5, full model or weights; `.hdf5` too)."""
    if name.endswith(".keras"):
        return ".keras"
    if name.endswith(".weights.h5"):
        return ".weights.h5"
    if name.endswith(_LEGACY):
        return ".h5"
    return None


def checkpoint_format(ck: CheckpointRecord) -> str | None:
    return file_format(Path(ck.path).name) or SUFFIX.get(ck.kind)


def _what(ck: CheckpointRecord, fmt: str) -> str:
    if fmt == ".h5":
        return f"is a legacy HDF5 file ({'full model' if ck.kind == 'model' else 'weights'})"
    return "holds a full model" if ck.kind == "model" else "holds weights only"


def _suffixes(fmt: str, to: Path) -> str:
    if fmt != ".h5":
        return repr(fmt)
    if file_format(to.name) == ".weights.h5":
        return "'.h5' or '.hdf5' ('.weights.h5' is Keras 3's own weights format)"
    return "'.h5' or '.hdf5'"


def check_target(ck: CheckpointRecord, to: Path, *, force: bool = False) -> None:
    """Refuse a destination that would lose data or mislabel the file's format (Keras picks
    the reader by the suffix)."""
    fmt = checkpoint_format(ck)
    if fmt is not None and file_format(to.name) != fmt:
        raise CheckpointError(
            f"the checkpoint {_what(ck, fmt)}: --to must end with {_suffixes(fmt, to)}"
        )
    if not to.parent.is_dir():
        raise CheckpointError(f"directory {to.parent} does not exist")
    if to.exists() and not force:
        raise CheckpointError(f"{to} already exists; pass --force to overwrite it")


def copy_verified(
    ck: CheckpointRecord,
    to: Path,
    *,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Copy the checkpoint to `to`, hashing the bytes as they are copied.

    The copy is written under a temporary name and only renamed to `to` once its size and
    sha256 match the record, so a file changed since the run (or during the copy) is refused
    and no half-written copy is ever left under the target name. `progress` receives the
    number of bytes copied by each chunk.
    """
    to = to.expanduser().resolve()
    check_target(ck, to, force=force)
    if not Path(ck.path).is_file():
        raise CheckpointError("refusing to restore: " + _reason(ck, MISSING))
    tmp = to.with_name(f".{to.name}.partial")
    try:
        with open(ck.path, "rb") as src, open(tmp, "wb") as dst:
            got = copy_hashed(src, dst, ck.size, progress)
        if got != (ck.size, ck.sha256):
            raise CheckpointError("refusing to restore: " + _reason(ck, MODIFIED))
        os.replace(tmp, to)
    finally:
        tmp.unlink(missing_ok=True)
    return to
