"""`tracker ui`: serve the read-only web UI (needs the `ui` extra: starlette, uvicorn, jinja2).

Those are imported inside the command, so every other command starts without them.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import webbrowser
from urllib.parse import quote

import click

from tracker.cli.options import App, pass_app
from tracker.config import sqlite_path


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def browser_url(host: str, port: int, token: str | None) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={quote(token)}" if token else "")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True)
@click.option("--open/--no-open", "open_", default=False, help="Open the UI in a web browser.")
@click.option(
    "--token",
    envvar="TRACKER_UI_TOKEN",
    help="Token a visitor must give (?token=...). Required off loopback: one is generated "
    "when not given. Defaults to $TRACKER_UI_TOKEN.",
)
@pass_app
def ui(app: App, host: str, port: int, open_: bool, token: str | None) -> None:
    """Serve a read-only web UI of the runs: table, run pages with charts, comparisons.

    It never writes to the database (SQLite is opened read-only). On any address other than
    loopback a token is required: one is generated and printed inside the URL to open.
    Ctrl-C stops it.

    \b
    Examples:
      tracker ui
      tracker ui --host 0.0.0.0 --port 8080
    """
    try:
        import uvicorn

        from tracker.ui.app import create_app, open_read_only
    except ModuleNotFoundError as e:
        raise click.ClickException(
            f"tracker ui needs {e.name}: pip install 'tracker[ui]'"
        ) from None
    db_file = sqlite_path(app.url)
    if db_file is not None and not db_file.is_file():
        raise click.ClickException(f"no database at {db_file}: give --db or $TRACKER_DB_URL")
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    store = click.get_current_context().with_resource(open_read_only(app.url))
    url = browser_url(host, port, token)
    click.echo(f"tracker ui on {app.masked_url}\n  open {url}\n  Ctrl-C to stop", err=True)
    if open_:
        threading.Timer(1.0, webbrowser.open, [url]).start()
    # uvicorn handles Ctrl-C itself: it stops taking requests, finishes those under way, returns
    uvicorn.run(create_app(store, token=token), host=host, port=port, log_level="warning")
    click.echo("Stopped.", err=True)
