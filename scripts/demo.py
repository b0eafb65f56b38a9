"""The tracker demo: train a small digits classifier three ways, query the runs, restore the best.

Run it through `scripts/demo`, which makes the virtual environment and a clean `demo-output/`.
Everything it writes goes under `demo-output/`: the SQLite run store (`tracker.db`), ModelCheckpoint
files, the callback's own best-weights copies, TensorBoard logs and `compare.png`.

The proof at the end: the best run's checkpoint is loaded into a freshly built model with
`tracker.restore_weights`, evaluated on the same validation split, and its loss must equal the
`val_loss` that Keras reported (and the tracker recorded) for that epoch. Exit status 1 if not.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

# Hides TensorFlow's harmless C++ errors ("NodeDef mentions attribute ..."). The few lines it
# prints before its logging starts ("oneDNN custom operations are on", "Could not find cuda
# drivers") cannot be turned off.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-output"
DB_URL = "sqlite:///demo-output/tracker.db"  # relative to ROOT, the working directory
EXPERIMENT = "digits"
SEED = 42
EPOCHS = 30
BATCH_SIZE = 32
REL_TOL = 1e-5

# Three settings of the same Dense network, different enough that the ranking means something.
RUNS = [
    {"run_name": "small-slow", "units": 16, "learning_rate": 3e-4, "dropout": 0.0},
    {"run_name": "medium", "units": 64, "learning_rate": 1e-3, "dropout": 0.2},
    {"run_name": "wide-fast", "units": 128, "learning_rate": 1e-2, "dropout": 0.5},
]


def banner(text: str) -> None:
    print(f"\n=== {text} ", "=" * max(0, 90 - len(text)), sep="", flush=True)


def load_data() -> tuple:
    """scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1], stratified 80/20."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)


def build_model(units: int, learning_rate: float, dropout: float):
    import keras

    model = keras.Sequential(
        [
            keras.Input(shape=(64,)),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def lr_schedule(epoch: int, lr: float) -> float:
    """Keep the starting rate for 10 epochs, then decay it by 10% an epoch."""
    return lr if epoch < 10 else lr * 0.9


def train(config: dict, data: tuple) -> None:
    import keras

    from tracker import TrackingCallback

    x_train, x_val, y_train, y_val = data
    name = config["run_name"]
    params = {k: v for k, v in config.items() if k != "run_name"}
    keras.utils.set_random_seed(SEED)
    model = build_model(**params)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(
            str(OUT / "checkpoints" / f"{name}.keras"), monitor="val_loss", save_best_only=True
        ),
        keras.callbacks.LearningRateScheduler(lr_schedule),
        keras.callbacks.TensorBoard(log_dir=str(OUT / "tensorboard" / name)),
        TrackingCallback(
            experiment=EXPERIMENT,
            run_name=name,
            params={**params, "batch_size": BATCH_SIZE, "seed": SEED},
            tags={"demo": "digits"},
        ),
    ]
    started = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        callbacks=callbacks,
        verbose=0,
    )
    val_loss = history.history["val_loss"]
    best = min(range(len(val_loss)), key=val_loss.__getitem__)
    print(
        f"{name:<11} {params}: {len(val_loss)} epochs in {time.perf_counter() - started:.1f}s, "
        f"best val_loss {val_loss[best]:.6f} at epoch {best}",
        flush=True,
    )


def tracker_cli(*args: str, show: bool = True) -> str:
    """Run the installed `tracker` command; print the command and its output when `show`."""
    exe = Path(sys.executable).with_name("tracker")
    cmd = [str(exe) if exe.exists() else "tracker", *args]
    if show:
        banner("$ tracker " + " ".join(args))
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if show:
        print(done.stdout, end="")
    if done.stderr:
        print(done.stderr, end="", file=sys.stderr)
    if done.returncode != 0:
        sys.exit(f"`tracker {' '.join(args)}` failed with exit status {done.returncode}")
    return done.stdout


def prove(best: dict, data: tuple) -> bool:
    """Restore the best run into a new model and check its val_loss against the recorded one."""
    import keras

    from tracker import restore_weights

    _, x_val, _, y_val = data
    config = next(c for c in RUNS if c["run_name"] == best["run_name"])
    keras.utils.set_random_seed(SEED + 1)  # other initial weights than in training
    model = build_model(**{k: v for k, v in config.items() if k != "run_name"})
    before = model.evaluate(x_val, y_val, batch_size=BATCH_SIZE, verbose=0, return_dict=True)
    with warnings.catch_warnings():
        # The best checkpoint is ModelCheckpoint's full `.keras` model; the fresh model has not
        # trained, so Keras says it skips the saved optimizer state. Only the weights matter here.
        warnings.filterwarnings("ignore", "Skipping variable loading for optimizer", UserWarning)
        ck = restore_weights(model, best["run_id"])
    after = model.evaluate(x_val, y_val, batch_size=BATCH_SIZE, verbose=0, return_dict=True)
    recorded, got = float(best["value"]), float(after["loss"])
    rel = abs(got - recorded) / abs(recorded)
    ok = ck.epoch == best["epoch"] and math.isclose(got, recorded, rel_tol=REL_TOL)
    banner("proof: restore_weights into a fresh model")
    print(f"fresh model before restore: val_loss {before['loss']:.6f}")
    print(f"restored: {Path(ck.path).relative_to(ROOT)} ({ck.source}, {ck.kind}, epoch {ck.epoch})")
    verdict = "==" if ok else "!="
    print(
        f"PROOF {'OK' if ok else 'FAILED'}: run {best['run_name']} ({best['run_id'][:8]}) "
        f"epoch {ck.epoch}: evaluated val_loss {got:.9f} {verdict} recorded {recorded:.9f} "
        f"(relative difference {rel:.1e}, tolerance {REL_TOL:.0e}; "
        f"val_accuracy {after['accuracy']:.4f})"
    )
    if ck.epoch != best["epoch"]:
        print(f"the checkpoint is from epoch {ck.epoch}, the best epoch is {best['epoch']}")
    return ok


def main() -> int:
    started = time.perf_counter()
    os.chdir(ROOT)
    os.environ["TRACKER_DB_URL"] = DB_URL
    shutil.rmtree(OUT, ignore_errors=True)  # a clean store each time: reproducible figures
    OUT.mkdir()

    banner(f"training {len(RUNS)} runs on sklearn digits (TRACKER_DB_URL={DB_URL})")
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    data = load_data()
    print(f"{len(data[0])} training and {len(data[1])} validation images, 64 pixels each")
    for config in RUNS:
        train(config, data)

    tracker_cli("runs", "list")
    tracker_cli("best", "--metric", "val_loss")
    best = json.loads(tracker_cli("best", "--metric", "val_loss", "--format", "json", show=False))
    tracker_cli("runs", "show", best["run_id"])
    listed = json.loads(tracker_cli("runs", "list", "--format", "json", show=False))
    run_ids = [r["id"][:8] for r in reversed(listed)]
    # Two metrics keep the per-epoch table readable (and epoch_time_s out of the figure).
    metrics = ["--metric", "val_loss", "--metric", "val_accuracy"]
    tracker_cli("compare", *run_ids, *metrics, "--plot", "demo-output/compare.png")

    ok = prove(best, data)
    elapsed = time.perf_counter() - started
    print(f"\ndemo finished in {elapsed:.0f}s; its files are in demo-output/")
    print(f"look at the runs in the browser: tracker --db {DB_URL} ui")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
