"""Which checkpoint a restore takes, on real `model.fit` runs: the weights must give back what
Keras reported for that epoch (History), whatever else ModelCheckpoint wrote."""

from __future__ import annotations

import re

import pytest

from .cli_support import fails, run
from .conftest import IN_CI
from .keras_helpers import data, fit, model, steps_per_execution_above_1

keras = pytest.importorskip("keras") if not IN_CI else __import__("keras")
import numpy as np  # noqa: E402 - after Keras, which needs it: keras-free runs skip this module

from tracker import TrackingCallback, restore_weights  # noqa: E402

pytestmark = pytest.mark.keras

VALIDATION_SPLIT = 0.25


def _val_loss(m) -> float:
    """The model's loss on fit's validation split (the tail of the data), as fit computes it."""
    x, y = data()
    start = int(len(x) * (1 - VALIDATION_SPLIT))
    return float(
        m.evaluate(x[start:], y[start:], batch_size=16, verbose=0, return_dict=True)["loss"]
    )


def _batch_saves(folder) -> dict[int, list[int]]:
    """Keras's own batch-based saves on disk, named `ck-{epoch}-{batch}` (both from 1): epoch ->
    batch indices from 0, as callbacks count them."""
    saves: dict[int, list[int]] = {}
    for path in folder.iterdir():
        epoch, batch = map(int, re.fullmatch(r"ck-(\d+)-(\d+)\.weights\.h5", path.name).groups())
        saves.setdefault(epoch - 1, []).append(batch - 1)
    return {epoch: sorted(batches) for epoch, batches in saves.items()}


def _fit_with_batch_saves(store, tmp_path, save_freq, compile_kwargs=None, **cb_kwargs):
    folder = tmp_path / "mc"
    folder.mkdir()
    mc = keras.callbacks.ModelCheckpoint(
        str(folder / "ck-{epoch}-{batch}.weights.h5"), save_weights_only=True, save_freq=save_freq
    )
    cb = TrackingCallback(store=store, artifacts_dir=tmp_path / "artifacts", **cb_kwargs)
    m = model()
    if compile_kwargs:
        m.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss="binary_crossentropy",
            metrics=["accuracy"],
            **compile_kwargs,
        )
    history = fit(m, [mc, cb], epochs=3, validation_split=VALIDATION_SPLIT)
    return cb, mc, history.history, _batch_saves(folder)


def test_epoch_restore_skips_mid_epoch_saves(store, db_url, tmp_path):
    # save_freq=4 over 5 batches an epoch: ModelCheckpoint saves inside every epoch, never at
    # its end; only the callback's own copy holds the weights of the best epoch's end.
    cb, mc, history, saves = _fit_with_batch_saves(store, tmp_path, save_freq=4)
    best = int(np.argmin(history["val_loss"]))
    last = mc.params["steps"] - 1
    assert saves.get(best) and last not in saves[best]  # a mid-epoch file competes

    fresh = model(seed=1)
    ck = restore_weights(fresh, cb.run_id, store=store)  # default: the best epoch
    assert (ck.epoch, ck.batch, ck.source) == (best, None, "TrackingCallback")
    assert _val_loss(fresh) == pytest.approx(history["val_loss"][best], rel=1e-5)

    to = tmp_path / "e.weights.h5"
    result = run(db_url, "restore", cb.run_id, "--epoch", str(best), "--to", str(to))
    assert result.exit_code == 0, result.stderr
    fresh = model(seed=2)
    fresh.load_weights(to)
    assert _val_loss(fresh) == pytest.approx(history["val_loss"][best], rel=1e-5)


def test_batch_save_is_restored_only_when_asked_for_by_batch(store, db_url, tmp_path):
    cb, mc, history, saves = _fit_with_batch_saves(
        store, tmp_path, save_freq=4, save_best_weights=False
    )
    epoch = max(saves)
    batch = max(saves[epoch])
    assert batch != mc.params["steps"] - 1
    to = tmp_path / "b.weights.h5"
    err = fails(db_url, "restore", cb.run_id, "--epoch", str(epoch), "--to", str(to))
    assert f"has no checkpoint of the end of epoch {epoch}, only of its batches" in err
    assert "--batch N" in err and not to.exists()
    err = fails(db_url, "restore", cb.run_id, "--to", str(to))  # nor by default
    assert "only batch checkpoints" in err and "--epoch N --batch M" in err

    args = ["--epoch", str(epoch), "--batch", str(batch), "--to", str(to)]
    result = run(db_url, "restore", cb.run_id, *args)
    assert result.exit_code == 0, result.stderr
    keras_file = tmp_path / "mc" / f"ck-{epoch + 1}-{batch + 1}.weights.h5"
    assert to.read_bytes() == keras_file.read_bytes()
    assert f"epoch {epoch} batch {batch}: weights from ModelCheckpoint" in result.stdout
    ck = restore_weights(model(seed=1), cb.run_id, epoch=epoch, batch=batch, store=store)
    assert ck.path == str(keras_file.resolve())


@pytest.mark.parametrize(
    "steps_per_execution", [1, pytest.param(2, marks=steps_per_execution_above_1())]
)
def test_a_save_at_the_last_batch_is_the_epochs_end(store, tmp_path, steps_per_execution):
    # save_freq = batches an epoch: one save an epoch, after its last batch. Under
    # steps_per_execution=2 Keras reports 5 batches as 1, 3 and 5: the last is past the end.
    cb, mc, history, saves = _fit_with_batch_saves(
        store,
        tmp_path,
        save_freq=5,
        compile_kwargs={"steps_per_execution": steps_per_execution},
        save_best_weights=False,
    )
    assert sorted(saves) == [0, 1, 2] and all(len(b) == 1 for b in saves.values())
    for epoch, (batch,) in saves.items():
        fresh = model(seed=1)
        ck = restore_weights(fresh, cb.run_id, epoch=epoch, store=store)
        assert (ck.epoch, ck.batch) == (epoch, batch)
        assert _val_loss(fresh) == pytest.approx(history["val_loss"][epoch], rel=1e-5)


def test_default_restore_is_the_best_epoch_that_has_a_checkpoint(store, db_url, tmp_path):
    # min_delta: improvements smaller than it are not new bests, so the keeper saves only the
    # first epoch (whatever the backend's numerics); restore gives the best weights that exist
    # and says so.
    cb = TrackingCallback(store=store, artifacts_dir=tmp_path / "artifacts", min_delta=10.0)
    history = fit(model(), [cb], epochs=3, validation_split=VALIDATION_SPLIT).history
    val = history["val_loss"]
    saved = {c.epoch for c in store.checkpoints(cb.run_id)}
    best = int(np.argmin(val))
    assert saved == {0} and best != 0  # what the defect was about
    chosen = min(saved, key=lambda e: (val[e], e))

    to = tmp_path / "best.weights.h5"
    result = run(db_url, "restore", cb.run_id, "--to", str(to))
    assert result.exit_code == 0, result.stderr
    first, note = result.stdout.splitlines()[:2]
    assert f"epoch {chosen} (val_loss " in first
    assert f"the run's best epoch {best} (val_loss " in note and "has no checkpoint" in note
    fresh = model(seed=1)
    fresh.load_weights(to)
    assert _val_loss(fresh) == pytest.approx(val[chosen], rel=1e-5)

    fresh = model(seed=2)
    assert restore_weights(fresh, cb.run_id, store=store).epoch == chosen
    assert _val_loss(fresh) == pytest.approx(val[chosen], rel=1e-5)


def test_legacy_h5_full_model_restores(store, db_url, tmp_path):
    on_disk = tmp_path / "m.h5"
    mc = keras.callbacks.ModelCheckpoint(str(on_disk), save_best_only=True)
    cb = TrackingCallback(store=store, artifacts_dir=tmp_path / "artifacts")
    history = fit(model(), [mc, cb], epochs=3, validation_split=VALIDATION_SPLIT).history
    x, _ = data()
    expected = keras.models.load_model(on_disk, compile=False).predict(x, verbose=0)

    to = tmp_path / "x.h5"
    result = run(db_url, "restore", cb.run_id, "--to", str(to))
    assert result.exit_code == 0, result.stderr
    assert f"from   {on_disk}" in result.stdout
    restored = keras.models.load_model(to, compile=False)
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-6)

    err = fails(db_url, "restore", cb.run_id, "--to", str(tmp_path / "x.keras"))
    assert "is a legacy HDF5 file (full model): --to must end with '.h5' or '.hdf5'" in err
    assert not (tmp_path / "x.keras").exists()

    fresh = model(seed=1)
    ck = restore_weights(fresh, cb.run_id, store=store)
    assert ck.path == str(on_disk.resolve()) and ck.kind == "model"
    np.testing.assert_allclose(fresh.predict(x, verbose=0), expected, rtol=1e-6)
    assert _val_loss(fresh) == pytest.approx(min(history["val_loss"]), rel=1e-5)
