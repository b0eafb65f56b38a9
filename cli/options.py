"""What the commands share: the lazily opened store, `--format`, KEY=VALUE and time parsing,
confirmation of destructive commands."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tracker import since
from tracker.config import mask_url, resolve_url
from tracker.modes import MODES
from tracker.present.output import FORMATS, View, render

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tracker.store.run_store import Store

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """The group's state: the database URL, and the store or engine once a command needs one."""

    def __init__(self, url: str | None) -> None:
        self.url = resolve_url(url)
        self._store: Store | None = None

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def store(self) -> Store:
        """The store, opened on first use and closed when the command ends."""
        if self._store is None:
            from tracker.store.run_store import Store

            ctx = click.get_current_context().find_root()
            self._store = ctx.with_resource(Store(self.url))
        return self._store

    def engine(self) -> Engine:
        """A bare engine (no schema check, no migration), for the `db` commands."""
        from tracker.store.db import make_engine

        engine = make_engine(self.url)
        click.get_current_context().find_root().call_on_close(engine.dispose)
        return engine


pass_app = click.make_pass_decorator(App)


def pass_store(f: F) -> F:
    """Hand the command the store as its first argument."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        return f(ctx.find_object(App).store(), *args, **kwargs)

    return functools.update_wrapper(wrapper, f)  # type: ignore[return-value]


mode_option = click.option(
    "--mode",
    type=click.Choice(MODES),
    default="auto",
    show_default=True,
    help="Whether higher or lower is better. auto: accuracy/auc/precision/recall/f1 are "
    "maximised, losses and errors minimised; other names need min or max.",
)

agg_option = click.option(
    "--agg",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="Each run's best value over its epochs, or its last one.",
)

format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people; json (strict, stable keys) or csv for programs.",
)


def emit(view: View, fmt: str) -> None:
    text = render(view, fmt)
    if text:
        click.echo(text)


@contextlib.contextmanager
def progress_bar(length: int, label: str, *, min_length: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long work on a terminal; silent otherwise (and for small
    jobs, which finish before a bar would be read)."""
    if length < min_length or not sys.stderr.isatty():
        yield lambda n: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, refuse unless `--yes` was given."""
    if yes:
        return
    if sys.stdin is None or not sys.stdin.isatty():
        raise click.ClickException(
            "refusing without confirmation: stdin is not a terminal; pass --yes"
        )
    if not click.confirm(question, default=False, err=True):
        raise click.ClickException("cancelled; nothing was changed")


# -- parsing ----------------------------------------------------------------------------------


def split_kv(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE. Received: {value!r}")
    return key.strip(), val


def kv_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    """Callback turning repeated KEY=VALUE options or arguments into a dict (last one wins)."""
    return dict(split_kv(v) for v in values)


def parse_since(value: str, now: datetime | None = None) -> datetime:
    try:
        return since.parse_since(value, now)
    except ValueError as e:
        raise click.BadParameter(f"expected {e}. Received: {value!r}") from None


def since_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    return None if value is None else parse_since(value)
