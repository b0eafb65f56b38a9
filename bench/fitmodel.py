"""The tiny Keras model and data of the fit-overhead benchmark, shared by both virtualenvs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402 - after the log level, which TensorFlow reads on import
import numpy as np  # noqa: E402

FEATURES = 32


def make_data(samples: int, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, FEATURES)).astype("float32")
    y = rng.integers(0, 10, size=samples)
    return x, y


def make_model() -> Any:
    """Dense 64 -> 10, compiled; one model is reused for every fit so each fit is traced once."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit_once(
    model: Any, data: tuple[Any, Any], batch: int, epochs: int, callbacks: list[Any]
) -> float:
    """Seconds one `model.fit` takes with `callbacks`."""
    x, y = data
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=callbacks)
    return time.perf_counter() - t0


def alternate(
    variants: dict[str, Callable[[], float]], reps: int, warmup: bool = True
) -> dict[str, list[float]]:
    """Time every variant `reps` times, rotating the order each repetition so that a slow
    stretch of the machine does not fall on one variant only."""
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        k = rep % len(names)
        order = names[k:] + names[:k]
        if rep % 2:
            order.reverse()
        for name in order:
            times[name].append(variants[name]())
    return times
