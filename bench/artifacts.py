"""Artifact store: what it costs training, and that transfers stream.

    python bench/artifacts.py fit [--epochs 20 --reps 5]   # per-epoch cost with/without a store
    python bench/artifacts.py stream [--gb 2 --s3-mb 256]  # peak RSS of hashing and transfers

`fit`: one process, one tiny model (bench/fitmodel.py), a ModelCheckpoint saving weights every
epoch in every variant, rotated every repetition: alone; with TrackingCallback and its default
store (the folder beside the SQLite file); with TrackingCallback uploading every ModelCheckpoint
file to another folder; the same to S3 (moto's server on loopback, the only S3-compatible
endpoint installable here, which runs on the same 2 cores). An epoch's cost is the median time
from one epoch's start to the next one's, so it holds every end-of-epoch hook and any CPU the
background uploads (and, for S3, the local server) take from training; the wait for uploads when
`fit` ends is reported on its own, and so is the time the training thread spends in the
tracker's end-of-epoch work and its handling of each save (hash, record, hand-off). The CPU time
per epoch of this process (all its threads) and of the local S3 server's process say how much of
an S3 variant's cost is the server, which a real S3 would not put on this machine.

`stream`: each step in a fresh process, its peak RSS (VmHWM) against the same process's RSS
(VmRSS) just before the step, its imports done: sha256 of a file, upload to a folder store,
fetch back verified; the same for S3 with a smaller file (moto keeps objects in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _moto() -> Any:
    from tests.s3server import MotoServer

    server = MotoServer()
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=server.url,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    import boto3

    boto3.client("s3").create_bucket(Bucket="tracker-bench")
    return server


# -- fit ----------------------------------------------------------------------------------------


def fit_bench(epochs: int, reps: int, samples: int, batch: int) -> dict[str, Any]:
    import keras
    from fitmodel import make_data, make_model

    from tracker import TrackingCallback
    from tracker.training.checkpoint_recorder import CheckpointKeeper

    server = _moto()
    work = Path(tempfile.mkdtemp(prefix="bench-artifacts-"))
    db = f"sqlite:///{work}/bench.db"
    data, model = make_data(samples), make_model()

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.starts.append(time.perf_counter())

        def on_train_begin(self, logs: Any = None) -> None:
            self.starts: list[float] = []

        def on_train_end(self, logs: Any = None) -> None:
            self.ended = time.perf_counter()

    spent = {"s": 0.0}

    def timed(fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent["s"] += time.perf_counter() - t0

        return wrapper

    # The training thread's share: the tracker's end-of-epoch work and its handling of each
    # ModelCheckpoint save (hash, record, hand-off to the upload thread).
    TrackingCallback._after_epoch_end = timed(TrackingCallback._after_epoch_end)
    CheckpointKeeper._saved = timed(CheckpointKeeper._saved)

    def variant(name: str) -> dict[str, float]:
        clock = EpochClock()
        server_cpu, own_cpu = _cpu_s(server._proc.pid), _own_cpu_s()
        path = str(work / name / "e{epoch:03d}.weights.h5")
        mc = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
        cbs: list[Any] = [clock, mc]
        if name == "folder":
            cbs.append(TrackingCallback(db=db))
        elif name == "folder+upload":
            store = str(work / "store")
            cbs.append(TrackingCallback(db=db, artifacts=store, upload_checkpoints=True))
        elif name == "s3+upload":
            url = "s3://tracker-bench/runs"
            cbs.append(TrackingCallback(db=db, artifacts=url, upload_checkpoints=True))
        spent["s"] = 0.0
        t0 = time.perf_counter()
        model.fit(*data, batch_size=batch, epochs=epochs, verbose=0, callbacks=cbs)
        end = time.perf_counter()
        gaps = [b - a for a, b in zip(clock.starts, clock.starts[1:], strict=False)]
        return {
            "epoch_s": statistics.median(gaps),
            "end_wait_s": end - clock.ended,
            "fit_s": end - t0,
            "hooks_s": spent["s"] / epochs,
            "cpu_s": (_own_cpu_s() - own_cpu) / epochs,
            "server_cpu_s": (_cpu_s(server._proc.pid) - server_cpu) / epochs,
        }

    names = ["none", "folder", "folder+upload", "s3+upload"]
    samples_by: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    try:
        for name in names:
            variant(name)  # warm-up: tracing, first imports, the store's engine
        for rep in range(reps):
            k = rep % len(names)
            for name in names[k:] + names[:k]:
                samples_by[name].append(variant(name))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {"epochs": epochs, "reps": reps, "samples": samples, "batch": batch}
    base = statistics.median(s["epoch_s"] for s in samples_by["none"])
    for name, runs in samples_by.items():
        epoch = statistics.median(s["epoch_s"] for s in runs)
        out[name] = {
            "epoch_ms": epoch * 1e3,
            "epoch_cost_ms": (epoch - base) * 1e3,
            "fit_s": statistics.median(s["fit_s"] for s in runs),
            "end_wait_ms": statistics.median(s["end_wait_s"] for s in runs) * 1e3,
            "tracker_hooks_per_epoch_ms": statistics.median(s["hooks_s"] for s in runs) * 1e3,
            "process_cpu_per_epoch_ms": statistics.median(s["cpu_s"] for s in runs) * 1e3,
            "s3_server_cpu_per_epoch_ms": statistics.median(s["server_cpu_s"] for s in runs) * 1e3,
        }
    return out


def _own_cpu_s() -> float:
    """CPU time of this process, every thread (training, the upload thread, s3fs's loop)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_s(pid: int) -> float:
    """CPU time of process `pid` (the local S3 server), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- stream -------------------------------------------------------------------------------------

_STEP = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tracker.artifacts import ArtifactStore
from tracker.checkpoint_files import file_digest
step, src, root, size, sha = sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
store = ArtifactStore(root)
def status(field):  # this process's own figures (ru_maxrss carries the parent's peak over exec)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
rss = lambda: status("VmHWM")
if store.local is None:
    store._filesystem()  # the protocol's imports are not the transfer's memory
before = status("VmRSS")
if step == "hash":
    size, sha = file_digest(src)
elif step == "upload":
    store.upload(src, "run/big.weights.h5", int(size), sha)
else:
    store.download("run/big.weights.h5", src.with_name("back.weights.h5"), int(size), sha)
print(json.dumps({"rss_before_mb": before, "rss_peak_mb": rss(), "size": int(size), "sha": sha}))
"""


def _step(step: str, src: Path, root: str, size: int = 0, sha: str = "") -> dict[str, Any]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _STEP, str(HERE.parent), step, str(src), root, str(size), sha],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout)
    res["seconds"] = time.perf_counter() - t0
    res["growth_mb"] = res["rss_peak_mb"] - res["rss_before_mb"]
    return res


def _transfers(src: Path, root: str) -> dict[str, Any]:
    hashed = _step("hash", src, root)
    size, sha = hashed["size"], hashed["sha"]
    return {
        "bytes": size,
        "hash": hashed,
        "upload": _step("upload", src, root, size, sha),
        "fetch": _step("fetch", src, root, size, sha),
    }


def stream_bench(gb: float, s3_mb: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    big = work / "big.weights.h5"
    with open(big, "wb") as f:  # sparse: its zeros are read back without taking disk space
        f.truncate(int(gb * (1 << 30)))
    out: dict[str, Any] = {"folder": _transfers(big, str(work / "store"))}
    for p in (work / "store").rglob("*.h5"):
        p.unlink()
    (work / "back.weights.h5").unlink(missing_ok=True)
    small = work / "s3" / "big.weights.h5"
    small.parent.mkdir()
    with open(small, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(s3_mb):
            f.write(block)
    server = _moto()
    try:
        out["s3"] = _transfers(small, "s3://tracker-bench/stream")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["fit", "stream"])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--s3-mb", type=int, default=256)
    args = ap.parse_args()
    load = os.getloadavg()
    if args.what == "fit":
        result = fit_bench(args.epochs, args.reps, args.samples, args.batch)
    else:
        result = stream_bench(args.gb, args.s3_mb)
    result["loadavg"] = {"before": load, "after": os.getloadavg()}
    result["max_rss_mb_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
