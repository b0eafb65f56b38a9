"""`tracker runs list|show|delete|tag`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from tracker.cli.options import (
    agg_option,
    confirm,
    emit,
    format_option,
    kv_pairs,
    mode_option,
    pass_store,
    progress_bar,
    since_option,
)
from tracker.present import views

if TYPE_CHECKING:
    from tracker.store.run_store import Store


@click.group()
def runs() -> None:
    """List, inspect, tag and delete runs."""


@runs.command(name="list")
@click.option("--experiment", help="Only runs of this experiment.")
@click.option(
    "--status",
    metavar="STATUS",
    help="Only runs in this state: running, finished, failed, interrupted or crashed.",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="K=V",
    callback=kv_pairs,
    help="Only runs with this tag (repeatable: all must match).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="K=V",
    callback=kv_pairs,
    help="Only runs with this param value, e.g. lr=0.001 (repeatable: all must match).",
)
@click.option(
    "--env",
    "environment",
    multiple=True,
    metavar="K=V",
    callback=kv_pairs,
    help="Only runs whose recorded environment has this value, e.g. backend=jax or "
    "keras=3.15.1 (repeatable: all must match).",
)
@click.option(
    "--since",
    metavar="WHEN",
    callback=since_option,
    help="Started at or after an ISO date/datetime (local time) or an age: 30m, 2h, 3d, 1w.",
)
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="0: all.")
@click.option("--metric", help="Metric to show. Defaults to val_loss when any run recorded it.")
@click.option("--sort", metavar="METRIC", help="Order by this metric (and show it), best first.")
@agg_option
@mode_option
@format_option
@pass_store
def runs_list(
    store: Store,
    experiment: str | None,
    status: str | None,
    tags: dict[str, str],
    params: dict[str, str],
    environment: dict[str, str],
    since: datetime | None,
    limit: int,
    metric: str | None,
    sort: str | None,
    agg: str,
    mode: str,
    fmt: str,
) -> None:
    """List runs, newest first, each with its best value of a metric and that epoch.

    JSON: an array of run objects (id, name, experiment, status, stop_reason, epochs,
    epochs_planned, started_at, ended_at, duration_s, params, tags) with the shown metric as
    `metric`, `mode`, `agg`, `value` (best or last) and `epoch` (the epoch of that value).

    \b
    Examples:
      tracker runs list --experiment mnist --tag team=vision --since 3d
      tracker runs list --sort val_accuracy --limit 10 --format json
      tracker runs list --env backend=jax
    """
    ranked = store.list_runs(
        experiment=experiment,
        status=status,
        tags=tags,
        params=params,
        environment=environment,
        since=since,
        limit=limit or None,
        metric=metric,
        sort=sort,
        agg=agg,
        mode=mode,
        check=True,
    )
    emit(views.runs_list(ranked), fmt)


@runs.command(name="show")
@click.argument("run")
@format_option
@pass_store
def runs_show(store: Store, run: str, fmt: str) -> None:
    """Show everything RUN recorded: params, environment, model, epochs, stop reason, files.

    Each checkpoint is checked on disk (size and sha256) and marked ok, missing or modified,
    and said to be available from the local file, the artifact store (a confirmed copy of the
    recorded size), both or neither.
    CSV holds the per-epoch table. JSON: the run's keys as in `runs list` (with `epochs_done`
    for the count), `epochs` ([{"epoch", "metrics", "lr"}]), `fit_params`, `environment`,
    `model`, `references`, `stop` (reason, epoch and the EarlyStopping details: monitor,
    patience, best, best_epoch, restored_epoch, ...), `summaries` and `checkpoints` (epoch,
    path, sha256, size, monitor, value, is_best, state, artifact_uri, uploaded, available, ...).

    \b
    Example:
      tracker runs show latest
      tracker runs show 3f2a9c1e --format json | jq .stop
    """
    from tracker.artifacts import checkpoint_places

    [detail] = store.run_details([run])
    emit(views.run_show(detail, checkpoint_places(detail.checkpoints)), fmt)


@runs.command(name="delete")
@click.argument("refs", metavar="RUN...", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_store
def runs_delete(store: Store, refs: tuple[str, ...], yes: bool) -> None:
    """Delete runs with their metrics, params, tags and checkpoint records.

    Their copies in the artifact store (each run's folder there) are deleted too; the files
    ModelCheckpoint wrote elsewhere are left alone. Asks first unless --yes; without a terminal
    to ask on, refuses.

    \b
    Example:
      tracker runs delete 3f2a9c1e quiet-otter-1a2b --yes
    """
    from tracker import uploads

    found = [d.run for d in store.run_details(refs, history=False)]
    roots = uploads.run_roots(store, [r.id for r in found])
    also = f" and their files in {views.store_names(roots)}" if roots else ""
    confirm(f"Delete {views.run_names(found)}{also}?", yes)
    with progress_bar(len(found), "Deleting runs", min_length=200) as advance:
        deleted = store.delete_runs([r.id for r in found], progress=advance)
    click.echo(f"Deleted {deleted} run{'s' if deleted != 1 else ''}.")
    for problem in uploads.delete_copies(roots):
        click.echo(f"warning: could not delete {problem}", err=True)


@runs.command(name="tag")
@click.argument("run")
@click.argument("tags", metavar="K=V...", nargs=-1, required=True, callback=kv_pairs)
@pass_store
def runs_tag(store: Store, run: str, tags: dict[str, str]) -> None:
    """Set tags on RUN (an existing key gets the new value).

    \b
    Example:
      tracker runs tag latest stage=prod reviewed=yes
    """
    record = store.set_tags(run, tags)
    click.echo(f"Tagged {record.label}: {views.format_tags(tags)}")
