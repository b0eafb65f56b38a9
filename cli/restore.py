"""`tracker restore`: copy a verified checkpoint file out of a run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tracker.artifacts import copy_out
from tracker.cli.options import pass_store, progress_bar
from tracker.present import views

if TYPE_CHECKING:
    from tracker.store.run_store import Store


@click.command()
@click.argument("run")
@click.option("--epoch", type=click.IntRange(min=0), help="The checkpoint of this epoch's end.")
@click.option(
    "--batch",
    type=click.IntRange(min=0),
    help="With --epoch: a batch-based ModelCheckpoint save of this batch (from 0) instead.",
)
@click.option("--best", is_flag=True, help="The best epoch that has a checkpoint (the default).")
@click.option(
    "--metric",
    help="Metric that picks the best epoch. Defaults to the one the run monitored, "
    "else val_loss, else loss.",
)
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Destination file, in the checkpoint's own format: .keras (full model), .weights.h5 "
    "(weights), .h5 or .hdf5 (legacy HDF5).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file at --to.")
@pass_store
def restore(
    store: Store,
    run: str,
    epoch: int | None,
    batch: int | None,
    best: bool,
    metric: str | None,
    to: Path,
    force: bool,
) -> None:
    """Copy a checkpoint of RUN to a file, after checking its size and sha256.

    By default the best epoch by the metric that has a checkpoint of its end, named in the
    output (with a note when the run's best epoch itself has none). A checkpoint whose file is
    missing or was changed since it was recorded is fetched from the artifact store instead
    ($TRACKER_ARTIFACTS when it holds the copy, else where the run put it), verified as it
    streams; with no matching copy there either it is refused, as is a --to whose suffix does not
    fit the file's format (.keras: full model, .weights.h5: weights, .h5/.hdf5: legacy HDF5), in
    a missing folder, or over an existing file without --force. Epochs and batches count from 0.

    \b
    Examples:
      tracker restore latest --to best.weights.h5
      tracker restore run-a --epoch 4 --to model.keras --force
      tracker restore run-a --epoch 4 --batch 99 --to mid.weights.h5
      tracker restore run-a --best --metric val_accuracy --to acc.weights.h5
    """
    if epoch is not None and (best or metric):
        raise click.UsageError("--epoch cannot be combined with --best or --metric")
    if batch is not None and epoch is None:
        raise click.UsageError("--batch needs --epoch: the epoch the batch belongs to")
    from tracker.restore import choose_for_target, select_checkpoints

    detail, choice = select_checkpoints(store, run, epoch=epoch, batch=batch, metric=metric)
    ck = choose_for_target(choice, to)
    with progress_bar(ck.size, f"Copying {Path(ck.path).name}", min_length=64 << 20) as advance:
        written, source = copy_out(ck, to, force=force, progress=advance)
    click.echo(views.restored(detail.run, ck, written, choice, source))
