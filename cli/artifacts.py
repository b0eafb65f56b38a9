"""`tracker artifacts push`: copy a past run's checkpoints into the artifact store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from tracker.cli.options import pass_store

if TYPE_CHECKING:
    from tracker.store.run_store import Store


@click.group()
def artifacts() -> None:
    """Copy runs' files into the artifact store, so any machine can restore them."""


@artifacts.command(name="push")
@click.argument("run")
@click.option(
    "--to",
    "location",
    metavar="LOCATION",
    help="Artifact store: a folder or an fsspec URL (s3://bucket/prefix). Defaults to "
    "$TRACKER_ARTIFACTS, else the folder beside a SQLite database ($TRACKER_ARTIFACTS_DIR).",
)
@pass_store
def push(store: Store, run: str, location: str | None) -> None:
    """Upload the checkpoints of RUN that are still intact on this machine.

    Each file is checked against its recorded size and sha256 while it streams, and recorded as
    stored once its copy is complete. Checkpoints already in the store are skipped; missing or
    changed files are named and make the command exit 1.

    \b
    Examples:
      tracker artifacts push latest
      tracker artifacts push run-a --to s3://team-bucket/tracker
    """
    from tracker.artifacts import shown, store_location
    from tracker.uploads import push_run

    where = store_location(location, None, store.url)
    report = push_run(store, run, where)
    click.echo(f"uploaded {report.uploaded} checkpoint(s) to {shown(where)}")
    for problem in report.problems:
        click.echo(f"not uploaded: {problem}", err=True)
    if report.problems:
        raise SystemExit(1)
