"""`tracker best`, `tracker compare`, `tracker metrics`: reading across runs and epochs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tracker.cli.options import agg_option, emit, format_option, mode_option, pass_store
from tracker.cli.plot import plot as draw
from tracker.present import comparison, views

if TYPE_CHECKING:
    from tracker.store.run_store import Store


@click.command()
@click.option("--metric", default="val_loss", show_default=True)
@mode_option
@agg_option
@click.option("--experiment", help="Only runs of this experiment.")
@click.option("--top", type=click.IntRange(min=1), help="Show the N best runs (JSON: an array).")
@format_option
@pass_store
def best(
    store: Store,
    metric: str,
    mode: str,
    agg: str,
    experiment: str | None,
    top: int | None,
    fmt: str,
) -> None:
    """The best run and epoch for a metric, across runs.

    NaN and infinite values never win. JSON: one object (an array with --top) with run_id,
    run_name, experiment, metric, mode, agg, epoch and value.

    \b
    Examples:
      tracker best --metric val_loss
      tracker best --metric val_accuracy --experiment mnist --top 3 --format json
    """
    ranked = store.best_runs(metric, mode=mode, agg=agg, experiment=experiment, top=top or 1)
    emit(views.best(ranked, as_list=top is not None), fmt)


@click.command()
@click.argument("runs", metavar="RUN RUN...", nargs=-1, required=True)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Metric to compare (repeatable). Defaults to every epoch metric except lr.",
)
@click.option("--all", "all_params", is_flag=True, help="Show every param, not only changed ones.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw the curves to this image file (.png, .svg, .pdf; needs matplotlib).",
)
@format_option
@pass_store
def compare(
    store: Store,
    runs: tuple[str, ...],
    metrics: tuple[str, ...],
    all_params: bool,
    plot: Path | None,
    fmt: str,
) -> None:
    """Compare runs side by side: params, each metric's best and last, stop reasons, curves.

    Without --plot the table output ends with one sparkline per run and metric, on a scale
    shared by the runs. CSV: one row per run. JSON: `runs`, `params`, `metrics` and `curves`.

    \b
    Examples:
      tracker compare run-a run-b
      tracker compare 3f2a 91bc latest --metric val_loss --plot curves.png
    """
    if len(runs) < 2:
        raise click.UsageError("compare needs at least two runs")
    details = store.run_details(runs, keys=metrics or None)
    if len(details) < 2:
        raise click.UsageError("these all name the same run: give at least two different runs")
    chosen = list(metrics) or comparison.default_metrics(details)
    if plot is not None:
        written = draw(details, chosen, plot)
        click.echo(f"Wrote {written}", err=True)
    sparklines = plot is None and fmt == "table"
    emit(comparison.compare(details, chosen, all_params=all_params, sparklines=sparklines), fmt)


@click.command()
@click.argument("run")
@click.option("--key", "keys", multiple=True, help="Only this metric (repeatable).")
@click.option("--batches", is_flag=True, help="Batch-level points instead of epoch-level ones.")
@format_option
@pass_store
def metrics(store: Store, run: str, keys: tuple[str, ...], batches: bool, fmt: str) -> None:
    """The metric history of RUN: one row per epoch (or batch), one column per metric.

    JSON: an array of {"epoch", "metrics": {key: value}} (plus "step" with --batches).

    \b
    Examples:
      tracker metrics latest
      tracker metrics run-a --key loss --key val_loss --format csv > history.csv
    """
    record, points = store.run_history(run, keys or None, batches=batches)
    emit(views.metrics(record, points, batches=batches), fmt)
