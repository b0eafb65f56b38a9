"""`tracker restore`: the chosen checkpoint is verified and copied, or refused with the reason."""

from __future__ import annotations

import hashlib
import os

import pytest

from tracker import Store, restore_weights
from tracker.errors import CheckpointError
from tracker.restore import find_checkpoint

from .cli_support import checkpoint_file, fails, run
from .helpers import seed_run


@pytest.fixture
def saved(store: Store, tmp_path):
    """A run (best val_loss at epoch 1, best accuracy at epoch 2) with checkpoints on disk."""
    run_id = seed_run(
        store,
        {"val_loss": [0.9, 0.4, 0.6], "accuracy": [0.5, 0.7, 0.8]},
        name="saver",
    )
    src = tmp_path / "ckpts"
    src.mkdir()
    files = {
        "w1": checkpoint_file(
            store,
            run_id,
            src / "e1.weights.h5",
            b"weights of epoch 1",
            epoch=1,
            source="TrackingCallback",
            monitor="val_loss",
            value=0.4,
            is_best=True,
        ),
        "m1": checkpoint_file(store, run_id, src / "e1.keras", b"model of epoch 1", epoch=1),
        "w2": checkpoint_file(store, run_id, src / "e2.weights.h5", b"weights of epoch 2", epoch=2),
    }
    out = tmp_path / "out"
    out.mkdir()
    return {"id": run_id, "out": out, **files}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_restore_best_weights_by_default(db_url, saved):
    to = saved["out"] / "best.weights.h5"
    result = run(db_url, "restore", "saver", "--to", str(to))
    assert result.exit_code == 0, result.stderr
    assert to.read_bytes() == b"weights of epoch 1"
    assert _sha(to) == saved["w1"].sha256
    out = result.stdout
    assert f"Restored run saver ({saved['id'][:8]}) epoch 1" in out
    assert saved["w1"].path in out and str(to) in out and saved["w1"].sha256[:16] in out
    assert not list(saved["out"].glob(".*partial"))  # no temporary file left behind


def test_restore_prefers_the_kind_the_target_asks_for(db_url, saved):
    to = saved["out"] / "model.keras"
    assert run(db_url, "restore", "saver", "--best", "--to", str(to)).exit_code == 0
    assert to.read_bytes() == b"model of epoch 1"


@pytest.mark.parametrize(
    "args, content",
    [
        (["--epoch", "2"], b"weights of epoch 2"),
        (["--best", "--metric", "accuracy"], b"weights of epoch 2"),
        (["--metric", "val_loss"], b"weights of epoch 1"),
    ],
)
def test_restore_chosen_epoch(db_url, saved, args, content):
    to = saved["out"] / "w.weights.h5"
    result = run(db_url, "restore", saved["id"][:6], *args, "--to", str(to))
    assert result.exit_code == 0, result.stderr
    assert to.read_bytes() == content


def test_restore_refuses_a_modified_file(db_url, saved):
    with open(saved["w1"].path, "ab") as f:
        f.write(b" and more")
    to = saved["out"] / "w.weights.h5"
    err = fails(db_url, "restore", "saver", "--to", str(to))
    assert "refusing to restore" in err and "was changed after it was recorded" in err
    # The model file of the same epoch is fine, and the message says how to get it instead.
    assert "the model checkpoint of epoch 1 is intact" in err and "'.keras'" in err
    assert not to.exists()
    assert run(db_url, "restore", "saver", "--to", str(saved["out"] / "m.keras")).exit_code == 0


def test_restore_refuses_a_same_size_modification(db_url, saved):
    with open(saved["w2"].path, "r+b") as f:
        f.write(b"W")  # same size, other bytes: only the hash tells
    err = fails(
        db_url, "restore", "saver", "--epoch", "2", "--to", str(saved["out"] / "w.weights.h5")
    )
    assert "was changed after it was recorded" in err


def test_restore_refuses_a_missing_file(db_url, saved):
    os.remove(saved["w2"].path)
    err = fails(
        db_url, "restore", "saver", "--epoch", "2", "--to", str(saved["out"] / "x.weights.h5")
    )
    assert f"checkpoint {saved['w2'].path} (epoch 2) no longer exists" in err


def test_restore_wrong_suffix_names_the_right_one(db_url, saved):
    err = fails(db_url, "restore", "saver", "--epoch", "2", "--to", str(saved["out"] / "w.h5"))
    assert "the checkpoint holds weights only: --to must end with '.weights.h5'" in err
    err = fails(db_url, "restore", "saver", "--epoch", "2", "--to", str(saved["out"] / "m.keras"))
    assert "must end with '.weights.h5'" in err
    assert not list(saved["out"].iterdir())


def test_restore_existing_target_needs_force(db_url, saved):
    to = saved["out"] / "w.weights.h5"
    to.write_bytes(b"precious")
    err = fails(db_url, "restore", "saver", "--to", str(to))
    assert f"{to} already exists; pass --force to overwrite it" in err
    assert to.read_bytes() == b"precious"
    assert run(db_url, "restore", "saver", "--to", str(to), "--force").exit_code == 0
    assert to.read_bytes() == b"weights of epoch 1"


def test_restore_into_a_missing_directory(db_url, saved):
    to = saved["out"] / "no" / "such" / "w.weights.h5"
    assert f"directory {to.parent} does not exist" in fails(
        db_url, "restore", "saver", "--to", str(to)
    )


def test_restore_to_a_directory_is_a_usage_error(db_url, saved):
    assert "is a directory" in fails(db_url, "restore", "saver", "--to", str(saved["out"]), code=2)


def test_restore_choice_errors(db_url, saved, store: Store):
    to = str(saved["out"] / "w.weights.h5")
    err = fails(db_url, "restore", "saver", "--epoch", "7", "--to", to)
    assert "has no checkpoint at epoch 7; epochs with checkpoints: 1, 2" in err
    err = fails(db_url, "restore", "saver", "--metric", "val_acc", "--to", to)
    assert (
        f"no metric 'val_acc' in run {saved['id'][:8]}; metrics recorded: accuracy, val_loss" in err
    )
    assert "cannot be combined" in fails(
        db_url, "restore", "saver", "--epoch", "1", "--best", "--to", to, code=2
    )
    assert "Missing option '--to'" in fails(db_url, "restore", "saver", code=2)
    seed_run(store, {"loss": [1.0]}, name="bare")
    assert "recorded no checkpoints" in fails(db_url, "restore", "bare", "--to", to)
    assert "no run matches 'ghost'" in fails(db_url, "restore", "ghost", "--to", to)


# -- which checkpoint: epoch ends, batches, the best epoch that has one --------------------------


@pytest.fixture
def batches(store: Store, tmp_path):
    """A run of 5 batches an epoch with ModelCheckpoint saves at batch 2 of epoch 1 and at the
    last batch of epoch 2 (as `save_freq=<int>` records them), and best val_loss at epoch 1."""
    run_id = seed_run(store, {"val_loss": [0.9, 0.4, 0.6]}, name="batches")
    store.update_run(run_id, fit_params={"steps": 5})
    src = tmp_path / "ckpts"
    src.mkdir()
    mid = checkpoint_file(store, run_id, src / "e1b2.weights.h5", b"mid 1", epoch=1, batch=2)
    end = checkpoint_file(store, run_id, src / "e2b4.weights.h5", b"end 2", epoch=2, batch=4)
    out = tmp_path / "out"
    out.mkdir()
    return {"id": run_id, "mid": mid, "end": end, "to": out / "w.weights.h5"}


def test_restore_by_epoch_takes_only_an_epochs_end(db_url, batches):
    to = str(batches["to"])
    err = fails(db_url, "restore", "batches", "--epoch", "1", "--to", to)
    assert "no checkpoint of the end of epoch 1, only of its batches 2" in err and "--batch" in err
    result = run(db_url, "restore", "batches", "--epoch", "1", "--batch", "2", "--to", to)
    assert result.exit_code == 0, result.stderr
    assert batches["to"].read_bytes() == b"mid 1" and "epoch 1 batch 2:" in result.stdout
    # A save after the last batch holds the epoch's end: by epoch, by batch and by default.
    for args in (["--epoch", "2"], ["--epoch", "2", "--batch", "4"], []):
        result = run(db_url, "restore", "batches", *args, "--to", to, "--force")
        assert result.exit_code == 0, result.stderr
        assert batches["to"].read_bytes() == b"end 2"
    err = fails(db_url, "restore", "batches", "--epoch", "1", "--batch", "3", "--to", to)
    assert "no checkpoint at batch 3 of epoch 1; checkpoints of epoch 1: batches 2" in err


def test_restore_batch_needs_an_epoch(db_url, batches, store: Store):
    to = str(batches["to"])
    assert "--batch needs --epoch" in fails(
        db_url, "restore", "batches", "--batch", "2", "--to", to, code=2
    )
    assert "cannot be combined" in fails(
        db_url, "restore", "batches", "--epoch", "1", "--batch", "2", "--best", "--to", to, code=2
    )
    assert "x>=0" in fails(
        db_url, "restore", "batches", "--epoch", "1", "--batch", "-1", "--to", to, code=2
    )
    with pytest.raises(CheckpointError, match="a batch needs the epoch it belongs to"):
        restore_weights(None, "batches", batch=2, store=store)
    with pytest.raises(CheckpointError, match="an epoch and a metric cannot both choose"):
        restore_weights(None, "batches", epoch=1, metric="val_loss", store=store)


def test_default_restore_is_the_best_epoch_with_a_checkpoint(db_url, store: Store, tmp_path):
    run_id = seed_run(
        store, {"val_loss": [0.9, 0.4, 0.6], "accuracy": [0.5, 0.9, 0.7]}, name="gappy"
    )
    w0 = checkpoint_file(store, run_id, tmp_path / "e0.weights.h5", b"epoch 0", epoch=0)
    w2 = checkpoint_file(store, run_id, tmp_path / "e2.weights.h5", b"epoch 2", epoch=2)
    to = tmp_path / "w.weights.h5"
    for args in ([], ["--best", "--metric", "accuracy"]):
        result = run(db_url, "restore", "gappy", *args, "--to", str(to), "--force")
        assert result.exit_code == 0, result.stderr
        assert to.read_bytes() == b"epoch 2"
    first, note = result.stdout.splitlines()[:2]
    assert "epoch 2 (accuracy 0.7): weights from ModelCheckpoint" in first
    assert note == "  note   the run's best epoch 1 (accuracy 0.9) has no checkpoint"
    assert find_checkpoint(store, "gappy").id == w2.id  # what restore_weights loads
    # The chosen checkpoint's file changed: refused with the reason, not epoch 0 instead.
    with open(w2.path, "ab") as f:
        f.write(b"!")
    err = fails(db_url, "restore", "gappy", "--to", str(tmp_path / "x.weights.h5"))
    assert f"refusing to restore: checkpoint {w2.path} (epoch 2) was changed" in err
    assert w0.path not in err


def test_default_restore_of_a_metric_of_unknown_direction(db_url, store: Store, tmp_path):
    run_id = seed_run(store, {"score": [3.0, 1.0, 2.0]}, name="scored")
    for epoch in (0, 1, 2):
        checkpoint_file(
            store,
            run_id,
            tmp_path / f"e{epoch}.weights.h5",
            f"epoch {epoch}".encode(),
            epoch=epoch,
            monitor="score",
            is_best=epoch < 2,
        )
    to = tmp_path / "w.weights.h5"
    assert run(db_url, "restore", "scored", "--to", str(to)).exit_code == 0
    assert to.read_bytes() == b"epoch 1"  # the newest save ModelCheckpoint called a best
    seed_run(store, {"score": [1.0]}, name="unsaved")
    checkpoint_file(store, store.get_run("unsaved").id, tmp_path / "u.weights.h5", b"u", epoch=0)
    err = fails(db_url, "restore", "unsaved", "--metric", "score", "--to", str(tmp_path / "u.h5"))
    assert "cannot tell whether 'score' is better high or low" in err and "--epoch N" in err


def test_restore_legacy_h5_keeps_its_suffix(db_url, store: Store, tmp_path):
    run_id = seed_run(store, {"val_loss": [0.5]}, name="legacy")
    checkpoint_file(store, run_id, tmp_path / "w.h5", b"hdf5 weights", epoch=0, kind="weights")
    for name in ("x.h5", "x.hdf5"):
        assert run(db_url, "restore", "legacy", "--to", str(tmp_path / name)).exit_code == 0
    err = fails(db_url, "restore", "legacy", "--to", str(tmp_path / "x.weights.h5"))
    assert "is a legacy HDF5 file (weights): --to must end with '.h5' or '.hdf5'" in err
    assert "'.weights.h5' is Keras 3's own weights format" in err
