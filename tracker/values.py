"""The one conversion every value takes on its way to the store.

Users hand the tracker numpy scalars and arrays (a sweep's `np.int64(16)`), tensors (a 0-d
`tf.Tensor` in the logs), tuples, paths and objects of their own, in params, tags, other callbacks'
configurations and the epoch logs. The store keeps JSON, so each value is turned into plain Python
here, once, by duck typing (numpy and the frameworks are never imported for it); only what has no
JSON form at all falls back to `repr`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def plain(value: Any) -> Any:
    """`value` as JSON-ready Python: dicts, lists, str, int, float (finite), bool or None.

    Non-finite floats become the strings "NaN", "Infinity", "-Infinity", as in the JSON output.
    """
    if value is None or type(value) in (bool, int, str):
        return value
    if isinstance(value, float):  # np.float64 is a float: made a plain one
        return float(value) if math.isfinite(value) else _NON_FINITE.get(value, "NaN")
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    converted = _from_array_like(value)
    if converted is not _UNCONVERTED:
        return plain(converted)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    try:
        return plain(json.loads(json.dumps(value)))
    except (TypeError, ValueError):
        return repr(value)


_UNCONVERTED = object()


def _from_array_like(value: Any) -> Any:
    """numpy scalars and arrays, tensors with `.numpy()`, and `__array__` objects as Python."""
    module = type(value).__module__ or ""
    if module.startswith("numpy") and callable(getattr(value, "tolist", None)):
        dtype: Any = getattr(value, "dtype", None)
        if getattr(dtype, "kind", "") == "f" and dtype.itemsize < 8:
            # np.float32(0.9) is 0.9 to its user, not 0.8999999761581421: its shortest text.
            if getattr(value, "ndim", 0) == 0:
                return float(str(value))
            return [plain(v) for v in value]
        return value.tolist()  # np.int64(3) -> 3, arrays -> nested lists
    to_numpy = getattr(value, "numpy", None)
    if callable(to_numpy):
        try:
            return _from_array_like(to_numpy())
        except Exception:  # noqa: BLE001 - a symbolic tensor has no value: fall through
            pass
    if hasattr(value, "__array__"):
        try:
            import numpy as np

            return np.asarray(value).tolist()
        except Exception:  # noqa: BLE001
            return _UNCONVERTED
    return _UNCONVERTED


def scalar(value: Any) -> float | None:
    """A log value as a float, as Keras's `float(value)` makes it for `History`; None when it is
    not a single number (an array, a tensor with dimensions, text)."""
    if type(value) is float:
        return value
    shape = getattr(value, "shape", None)
    if shape is not None and tuple(shape) != ():
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def flat_logs(logs: Mapping[str, Any]) -> dict[str, Any]:
    """Nested logs flattened as Keras flattens them for `History` and the callbacks.

    A custom `train_step` that returns `{m.name: m.result() for m in self.metrics}` gives
    `{"loss": ..., "compile_metrics": {"mae": ...}}`; Keras reports `loss` and `mae`.
    """
    out: dict[str, Any] = {}
    for key, value in logs.items():
        if isinstance(value, Mapping):
            out.update(flat_logs(value))
        else:
            out[str(key)] = value
    return out


def fmt_float(value: float) -> str:
    """A metric value as messages and tables show it to a person: four significant digits."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"
