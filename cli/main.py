"""The `tracker` group: the `--db` option and the one place errors become one line on stderr.

Commands import the store, sqlalchemy and matplotlib only when they run, so `tracker --help` and
the `db` commands never open a store (which would migrate or refuse an old database).
"""

from __future__ import annotations

from typing import Any

import click

from tracker.cli import analysis, artifacts, db, restore, runs, sync, ui
from tracker.cli.options import App
from tracker.config import mask_url
from tracker.errors import TrackerError

_LIBRARIES = ("sqlalchemy", "alembic")  # their errors mean a database or schema problem


class TrackerGroup(click.Group):
    """A group whose commands' expected failures exit 1 with one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TrackerError as e:
            raise click.ClickException(one_line(str(e))) from e
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            raise  # the reader went away (`tracker runs list | head`): click ends quietly
        except OSError as e:
            raise click.ClickException(one_line(str(e))) from e
        except Exception as e:
            if type(e).__module__.split(".")[0] not in _LIBRARIES:
                raise
            orig = getattr(e, "orig", None)
            raise click.ClickException(one_line(str(orig or e))) from e


def one_line(message: str) -> str:
    """The first line of a message, with any password in a URL masked."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return mask_url(lines[0] if lines else "unknown error")


@click.group(cls=TrackerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Database URL (sqlite:///file.db, postgresql://user@host/db) or a SQLite file path. "
    "Defaults to $TRACKER_DB_URL, then sqlite:///tracker.db in the working directory.",
)
@click.version_option(package_name="tracker")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None) -> None:
    """Find, compare and restore Keras training runs recorded by tracker.

    \b
    Examples:
      tracker runs list --experiment mnist --sort val_loss
      tracker best --metric val_accuracy --top 5
      tracker compare run-a run-b --plot curves.png
      tracker restore latest --to best.weights.h5

    RUN is a full run id, a unique id prefix of 4+ hex digits, a unique run name, or `latest`.
    """
    ctx.obj = App(db_url)


cli.add_command(runs.runs)
cli.add_command(analysis.best)
cli.add_command(analysis.compare)
cli.add_command(analysis.metrics)
cli.add_command(restore.restore)
cli.add_command(db.db)
cli.add_command(sync.sync)
cli.add_command(ui.ui)
cli.add_command(artifacts.artifacts)


if __name__ == "__main__":
    cli()
