"""Tiny models and data for real `model.fit` runs in the callback tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import numpy as np


def data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np  # here: the keras-free tests import this module without numpy

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("float32")
    return x, y


def model(lr: float | object = 0.05, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    m = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    m.compile(optimizer=keras.optimizers.SGD(lr), loss="binary_crossentropy", metrics=["accuracy"])
    return m


def fit(m, callbacks, epochs: int = 3, **kwargs):
    x, y = data()
    kwargs.setdefault("validation_split", 0.25)
    return m.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=callbacks, **kwargs)


def backend() -> str:
    import keras

    return keras.backend.backend()


def tensorflow_only(what: str) -> pytest.MarkDecorator:
    """A test that needs TensorFlow itself (not Keras on another backend): skipped, with the
    reason, when Keras runs on JAX or PyTorch (whose test environments have no TensorFlow)."""
    name = backend()
    return pytest.mark.skipif(
        name != "tensorflow", reason=f"needs TensorFlow itself ({what}); Keras runs on {name}"
    )


def steps_per_execution_above_1() -> pytest.MarkDecorator:
    """A test that compiles with `steps_per_execution` > 1: Keras refuses it on PyTorch."""
    return pytest.mark.skipif(
        backend() == "torch",
        reason="Keras's PyTorch backend refuses steps_per_execution > 1",
    )
