"""Artifact store: what it costs training, and that transfers stream.

    python bench/artifacts.py fit [--epochs 20 --reps 5]   # per-epoch cost with/without a store
    python bench/artifacts.py stream [--gb 2 --s3-mb 256]  # peak RSS of hashing and transfers

`fit`: one process, one tiny model (bench/fitmodel.py), three variants rotated every repetition:
ModelCheckpoint alone; with TrackingCallback and its default store (the folder beside the SQLite
file); with TrackingCallback uploading every ModelCheckpoint file to S3 (moto's server on
loopback, the only S3-compatible endpoint installable here). An epoch's cost is the median time
from one epoch's start to the next one's, so it holds every end-of-epoch hook (the tracker's
write, the ModelCheckpoint save and the upload hand-off) and not the wait for uploads when `fit`
ends, which is reported on its own.

`stream`: each step in a fresh process, its peak RSS (ru_maxrss) against the same process's
RSS before the step: sha256 of a file, upload to a folder store, fetch back verified; the same
for S3 with a smaller file (moto keeps objects in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

    def variant(name: str) -> dict[str, float]:
        clock = EpochClock()
        mc = keras.callbacks.ModelCheckpoint(str(work / name / "e{epoch:03d}.weights.h5"), True)
        cbs: list[Any] = [clock, mc]
        if name == "folder":
            cbs.append(TrackingCallback(db=db))
        elif name == "s3":
            url = "s3://tracker-bench/runs"
            cbs.append(TrackingCallback(db=db, artifacts=url, upload_checkpoints=True))
        t0 = time.perf_counter()
        model.fit(*data, batch_size=batch, epochs=epochs, verbose=0, callbacks=cbs)
        end = time.perf_counter()
        gaps = [b - a for a, b in zip(clock.starts, clock.starts[1:], strict=False)]
        return {
            "epoch_s": statistics.median(gaps),
            "end_wait_s": end - clock.ended,
            "fit_s": end - t0,
        }

    names = ["none", "folder", "s3"]
    for name in names:
        variant(name)  # warm-up: tracing, first imports, the store's engine
    samples_by: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for rep in range(reps):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            samples_by[name].append(variant(name))
    server.stop()
    out: dict[str, Any] = {"epochs": epochs, "reps": reps, "samples": samples, "batch": batch}
    base = statistics.median(s["epoch_s"] for s in samples_by["none"])
    for name, runs in samples_by.items():
        epoch = statistics.median(s["epoch_s"] for s in runs)
        out[name] = {
            "epoch_ms": epoch * 1e3,
            "epoch_cost_ms": (epoch - base) * 1e3,
            "fit_s": statistics.median(s["fit_s"] for s in runs),
            "end_wait_ms": statistics.median(s["end_wait_s"] for s in runs) * 1e3,
        }
    return out


# -- stream -------------------------------------------------------------------------------------

_STEP = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tracker.artifacts import ArtifactStore
from tracker.checkpoints import file_digest
step, src, root, size, sha = sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
store = ArtifactStore(root)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if store.local is None:
    store._filesystem()  # the protocol's imports are not the transfer's memory
before = rss()
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
    small.write_bytes(os.urandom(1 << 20) * s3_mb)
    server = _moto()
    try:
        out["s3"] = _transfers(small, "s3://tracker-bench/stream")
    finally:
        server.stop()
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
