"""`tracker restore`: copy a verified checkpoint file out of a run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tracker import views
from tracker.checkpoints import copy_verified
from tracker.cli.options import pass_store, progress_bar

if TYPE_CHECKING:
    from tracker.store import Store


@click.command()
@click.argument("run")
@click.option("--epoch", type=click.IntRange(min=0), help="The checkpoint of this epoch.")
@click.option("--best", is_flag=True, help="The run's best epoch (the default).")
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
    help="Destination file: .keras for a full model, .weights.h5 for weights.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file at --to.")
@pass_store
def restore(
    store: Store, run: str, epoch: int | None, best: bool, metric: str | None, to: Path, force: bool
) -> None:
    """Copy a checkpoint of RUN to a file, after checking its size and sha256.

    A checkpoint whose file is missing or was changed since it was recorded is refused, as is a
    --to whose suffix does not fit the file (.keras: full model, .weights.h5: weights), in a
    missing folder, or over an existing file without --force. Epochs count from 0.

    \b
    Examples:
      tracker restore latest --to best.weights.h5
      tracker restore run-a --epoch 4 --to model.keras --force
      tracker restore run-a --best --metric val_accuracy --to acc.weights.h5
    """
    if epoch is not None and (best or metric):
        raise click.UsageError("--epoch cannot be combined with --best or --metric")
    detail = store.run_detail(run, history=False)
    ck = views.choose_for_target(detail, to, epoch=epoch, metric=metric)
    with progress_bar(ck.size, f"Copying {Path(ck.path).name}", min_length=64 << 20) as advance:
        written = copy_verified(ck, to, force=force, progress=advance)
    click.echo(views.restored(detail.run, ck, written))
