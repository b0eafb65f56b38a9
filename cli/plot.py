"""`compare --plot`: the runs' curves drawn to an image file with matplotlib (an optional
extra, imported only here and only when asked for)."""

from __future__ import annotations

import math
from pathlib import Path

from tracker.errors import TrackerError
from tracker.records import RunDetail


def plot(details: list[RunDetail], metrics: list[str], path: Path) -> Path:
    """Draw `metrics` of all runs (one panel per metric, the runs overlaid) to an image file.

    Raises:
        TrackerError: matplotlib is missing, the folder does not exist, or the format is unknown.
    """
    try:
        import matplotlib  # noqa: F401 - the package first: a clear error when it is missing
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as e:
        raise TrackerError("plotting needs matplotlib: pip install 'tracker[plot]'") from e
    path = path.expanduser().resolve()
    if not path.parent.is_dir():
        raise TrackerError(f"directory {path.parent} does not exist")
    fig = Figure(figsize=(8, 3 * max(len(metrics), 1)), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in canvas.get_supported_filetypes():
        known = ", ".join(sorted(canvas.get_supported_filetypes()))
        raise TrackerError(f"cannot write a plot as {path.name!r}: use one of {known}")
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, metrics, strict=True):
        for d in details:
            points = [p for p in d.history if p.key == key]
            ys = [p.value if math.isfinite(p.value) else math.nan for p in points]
            ax.plot([p.epoch for p in points], ys, marker=".", label=d.run.name)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    axes[-1].set_xlabel("epoch")
    fig.savefig(path, format=fmt)
    return path
