"""tracker: record Keras training runs in SQLite or PostgreSQL and find the best one.

`import tracker` stays light: the store (SQLAlchemy) and the Keras parts (`TrackingCallback`,
`restore_weights`) are loaded on first use, so `tracker --help` starts fast and query tools never
import TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracker.errors import TrackerError

__version__ = "0.1.0"
__all__ = [
    "Store",
    "TrackerError",
    "TrackingCallback",
    "open_store",
    "restore_weights",
    "__version__",
]

if TYPE_CHECKING:
    from tracker.restore import restore_weights
    from tracker.store.run_store import Store, open_store
    from tracker.training.callback import TrackingCallback

_LAZY = {
    "Store": "tracker.store.run_store",
    "open_store": "tracker.store.run_store",
    "TrackingCallback": "tracker.training.callback",
    "restore_weights": "tracker.restore",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tracker' has no attribute {name!r}")
