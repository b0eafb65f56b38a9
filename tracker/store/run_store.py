"""The run store's public surface: `Store`, one method per question the CLI, the web UI and
scripts ask and one per event the callback reports, each one short transaction.

Transactions are opened by `tracker.store.transactions` (every write through `Store._write_tx`,
which retries while SQLite reports a lock). The statements take the connection as an argument:
`queries` (a run's facts), `listing` (listing and ranking runs), `series_reads` (chart series),
`writes` (metric points) and `run_writes` (a run's own rows).
Nothing here keeps a transaction open between calls, so a training process writing an epoch
never blocks `tracker runs list` in another shell.

Statements are SQLAlchemy Core on the tables of `tracker.store.tables`. The ORM
(`tracker.store.models`) is imported only when runs move between stores (`import_runs`,
`export_run`, through `tracker.store.transfer`), so query commands start without it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection

from tracker.clock import DEFAULT_HEARTBEAT_S, heartbeat_deadline, utcnow
from tracker.config import mask_url, password_free, resolve_url
from tracker.records import (
    CheckpointRecord,
    MetricPoint,
    RankedRun,
    RunDestination,
    RunDetail,
    RunRecord,
    SummaryRecord,
)
from tracker.store import listing, queries, run_writes, series_reads, writes
from tracker.store.db import SQLITE_BUSY_TIMEOUT_S, make_engine
from tracker.store.listing import ListOrder, RunFilter, RunsPage
from tracker.store.revisions import check_schema
from tracker.store.transactions import Transactions

T = TypeVar("T")

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tracker.store.transfer import ImportResult, RunBundle

__all__ = ["ListOrder", "RunFilter", "RunsPage", "Store", "open_store"]


class Store:
    """A run store on one database.

    Args:
        url: SQLAlchemy URL; defaults to `TRACKER_DB_URL`, then `sqlite:///tracker.db`.
        auto_upgrade: upgrade an older schema on open. Defaults to `True` for SQLite (the file is
            the user's own) and `False` for PostgreSQL (it may be shared).
        busy_timeout: seconds a SQLite write waits for another process's lock. Defaults to `60`.
        pre_ping: test a pooled server connection before each use (`tracker.store.db`).

    Attributes:
        identity: the database's own random id (made once by migration 0003), the same whatever
            URL reaches it; read when the store opens. None only if someone deleted it.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        auto_upgrade: bool | None = None,
        busy_timeout: float = SQLITE_BUSY_TIMEOUT_S,
        pre_ping: bool = True,
    ) -> None:
        self.url = resolve_url(url)
        self.engine = make_engine(self.url, busy_timeout=busy_timeout, pre_ping=pre_ping)
        if auto_upgrade is None:
            auto_upgrade = self.engine.dialect.name == "sqlite"
        try:
            # Which database this is, whatever URL reached it (read once: a spool started after
            # the database went away still knows it).
            self.identity = check_schema(self.engine, auto_upgrade=auto_upgrade)
        except BaseException:
            self.engine.dispose()
            raise
        self._tx = Transactions(self.engine)

    @property
    def masked_url(self) -> str:
        """The URL with its password masked: the only form messages show."""
        return mask_url(self.url)

    def close(self) -> None:
        """Close the engine's pooled connections (the `with` block does it on exit)."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions (`tracker.store.transactions`) -------------------------------------------

    def _read(self, *, snapshot: bool = False) -> AbstractContextManager[Connection]:
        return self._tx.read(snapshot=snapshot)

    def _driver_write(self) -> AbstractContextManager[writes.DriverCursor]:
        """The per-epoch hot path's transaction: the driver's own cursor (`Transactions`)."""
        return self._tx.driver_write()

    def _write_tx(
        self, fn: Callable[[Any], T], opens: Callable[[], AbstractContextManager[Any]] | None = None
    ) -> T:
        """Run `fn(conn)` in one write transaction (a SQLAlchemy connection unless `opens` says
        otherwise), retried while SQLite reports a lock: every write goes through here."""
        return self._tx.run(fn, opens)

    # -- writing a run: one method per event the callback reports ------------------------------

    def create_run(
        self,
        *,
        experiment: str = "default",
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        fit_params: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        model: Mapping[str, Any] | None = None,
        epochs_planned: int | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_S,
        run_id: str | None = None,
        started_at: datetime | None = None,
    ) -> RunRecord:
        """Start a run in state `running`. Returns its record (with a generated name if none),
        built from what was written rather than read back: this is on every `fit`'s start.

        Every value is stored as `values.plain` gives it (numpy scalars and arrays as numbers
        and lists, tuples as lists, NaN as "NaN", what has no JSON form as its repr); tags are
        that, as text.
        """
        run_id = run_id or uuid.uuid4().hex
        now = (started_at or utcnow()).astimezone(timezone.utc)
        row = run_writes.new_run_row(run_id, name, now, heartbeat_interval, epochs_planned)
        facts = {"fit_params": fit_params, "environment": environment, "model": model}
        row.update({k: run_writes.as_stored(v) for k, v in facts.items()})
        params, tags = params or {}, tags or {}
        self._write_tx(  # on the driver's cursor: one round trip to PostgreSQL
            lambda c: run_writes.insert_run(c, row, experiment, params, tags), self._driver_write
        )
        return run_writes.started_record(row, experiment, params, tags)

    def log_epoch(
        self,
        run_id: str,
        epoch: int,
        metrics: Mapping[str, float],
        *,
        batches: Iterable[MetricPoint] = (),
        at: datetime | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        """Store one epoch's metrics (and the batch points buffered during it) and bring the
        run's summaries up to date, in one transaction."""
        now = at or utcnow()
        points = _epoch_points(epoch, metrics, batches, now)
        deadline = heartbeat_deadline(now, heartbeat_interval)
        self._write_tx(
            lambda c: writes.epoch_done(c, run_id, epoch, now, deadline, points),
            lambda: self._tx.driver_write(one_statement=True),  # on PostgreSQL, it is one
        )

    def finish_run_after_epoch(
        self,
        run_id: str,
        epoch: int,
        metrics: Mapping[str, float],
        *,
        batches: Iterable[MetricPoint] = (),
        at: datetime | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_S,
        status: str,
        stop_reason: str,
        stop_details: Mapping[str, Any] | None = None,
    ) -> None:
        """`log_epoch` of the run's last epoch (`at`: when it ended) and `finish_run`, in one
        transaction: the end of `fit` waits for one round trip to the database, not two."""
        now = utcnow()
        epoch_at = at or now
        points = _epoch_points(epoch, metrics, batches, epoch_at)
        deadline = heartbeat_deadline(epoch_at, heartbeat_interval)

        def tx(conn: writes.DriverCursor) -> None:
            writes.epoch_done(conn, run_id, epoch, epoch_at, deadline, points)
            run_writes.finish_run(conn, run_id, now, status, stop_reason, stop_details)

        self._write_tx(tx, self._driver_write)

    def discard_epochs(self, run_id: str, from_epoch: int) -> int:
        """Forget what the run recorded for `from_epoch` and every later epoch, before they are
        run again (a resumed `fit` with `initial_epoch` at or below the last recorded epoch).

        Their metric points go, epoch and batch level; the run's summaries are rebuilt from the
        points that remain, `epochs_done` becomes the number of epochs left and `last_epoch` the
        latest of them (None if none). Checkpoint rows stay: their files are facts on disk.
        Returns how many epochs (with epoch-level points) were discarded; `RunNotFound` when no
        run has the id.
        """
        return self._write_tx(lambda c: writes.discard_epochs(c, run_id, from_epoch))

    def log_batch_metrics(self, run_id: str, points: Iterable[MetricPoint]) -> int:
        """Store batch-level points in bulk (one transaction for all of them). Returns the count."""
        rows = list(points)
        if rows:
            self._write_tx(lambda c: writes.insert_points(c, run_id, rows), self._driver_write)
        return len(rows)

    def add_checkpoint(
        self, run_id: str, **facts: Unpack[run_writes.CheckpointFacts]
    ) -> CheckpointRecord:
        """Record a checkpoint file (`run_writes.CheckpointFacts` says what of it); with
        `artifact_key`, also the copy the artifact store holds (`uploaded`) or is about to
        receive (see `mark_uploaded`)."""
        row = run_writes.checkpoint_row(run_id, facts)
        return self._write_tx(lambda c: run_writes.add_checkpoint(c, row))

    def mark_uploaded(self, run_id: str, artifact_key: str, sha256: str) -> int:
        """Confirm the artifact-store copy of the run's checkpoints with this key and hash (the
        same bytes recorded twice share one copy); how many rows were confirmed."""
        return self._write_tx(lambda c: run_writes.mark_uploaded(c, run_id, artifact_key, sha256))

    def record_upload(self, checkpoint_id: int, *, artifact_root: str, artifact_key: str) -> None:
        """The checkpoint's copy is now confirmed at `artifact_root`/`artifact_key`."""
        self._write_tx(
            lambda c: run_writes.record_upload(c, checkpoint_id, artifact_root, artifact_key)
        )

    def heartbeat(self, run_id: str, interval: float = DEFAULT_HEARTBEAT_S) -> None:
        """Note that the run's process is alive: the run counts as crashed only once its new
        deadline (`clock.heartbeat_deadline`) passes without another beat."""
        now = utcnow()
        self._write_tx(lambda c: run_writes.heartbeat(c, run_id, now, interval), self._driver_write)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Replace run-level JSON facts learned after the start (model, references, fit_params,
        environment, epochs_planned, stop_details), each stored as `values.plain` gives it."""
        if unknown := set(fields) - run_writes.UPDATABLE:
            raise ValueError(f"cannot update run fields {sorted(unknown)}")
        self._write_tx(lambda c: run_writes.update_run(c, run_id, fields))

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        stop_reason: str,
        stop_details: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Close a run with its final status and why it stopped (`get_run` reads it back)."""
        now = at or utcnow()
        self._write_tx(  # on the driver's cursor: one round trip to PostgreSQL
            lambda c: run_writes.finish_run(c, run_id, now, status, stop_reason, stop_details),
            self._driver_write,
        )

    def resume_run(
        self,
        ref: str,
        *,
        epochs_planned: int | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_S,
    ) -> RunRecord:
        """Put a past run back in state `running` so a new `fit` can append epochs to it."""
        now = utcnow()
        run_id = self._write_tx(
            lambda c: run_writes.resume_run(c, ref, now, epochs_planned, heartbeat_interval)
        )
        return self.get_run(run_id)

    def set_destination(self, run_id: str, *, url: str, database_id: str | None) -> None:
        """Note, in a spool file, the database the run was meant for: its identity when it is
        known, and its URL, which is stored without its password (`config.password_free`)."""
        row = {"url": password_free(url), "database_id": database_id}
        self._write_tx(lambda c: run_writes.set_destination(c, run_id, row))

    # -- writing on a user's request (CLI, sync) ------------------------------------------------

    def set_tags(self, ref: str, tags: Mapping[str, Any]) -> RunRecord:
        """Add or replace tags of the run `ref` names; the run as it now stands."""
        return self.get_run(self._write_tx(lambda c: run_writes.set_tags(c, ref, tags)))

    def delete_runs(
        self, run_ids: Iterable[str], *, progress: Callable[[int], None] | None = None
    ) -> int:
        """Delete runs with everything they recorded, 100 runs a transaction; `progress` hears
        how many were deleted by each. Checkpoint files on disk are left alone."""
        ids = list(run_ids)
        deleted = 0
        for i in range(0, len(ids), 100):
            chunk = ids[i : i + 100]
            n = self._write_tx(partial(run_writes.delete_runs, run_ids=chunk))
            deleted += n
            if progress is not None:
                progress(n)
        return deleted

    def import_runs(self, bundles: Iterable[RunBundle]) -> ImportResult:
        """Add whole runs (or what they lack) in one transaction; see `tracker.store.transfer`."""
        from tracker.store import transfer

        bundles = list(bundles)
        return self._write_tx(lambda s: transfer.import_runs(s, bundles), self._tx.orm_write)

    # -- reading: one method per question the CLI, the web UI and scripts ask -----------------

    def get_run(self, ref: str) -> RunRecord:
        """The run `ref` names: a full id, a unique id prefix, `latest` or a unique name
        (`queries.resolve_run_id`); `RunNotFound` or `AmbiguousRun` otherwise."""
        with self._read() as conn:
            now = utcnow()
            return queries.run_record(conn, queries.resolve_run_id(conn, ref, now), now)

    def list_runs(
        self,
        *,
        experiment: str | None = None,
        status: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
        since: datetime | None = None,
        stop_reason: str | None = None,
        text: str | None = None,
        metric: str | None = None,
        sort: str | None = None,
        agg: str = "best",
        mode: str = "auto",
        order_by: str | None = None,
        descending: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
        check: bool = False,
    ) -> list[RankedRun]:
        """Runs newest first (or by `sort`), each with its best (or last) value of a metric.

        The filters are `listing.RunFilter`'s, the order `listing.ListOrder`'s; `limit` and
        `offset` page. With `check`, a `metric` or `sort` that no run recorded raises
        `MetricNotFound` (naming the metrics that exist) instead of showing an empty column.
        """
        f = RunFilter(experiment, status, tags, params, since, stop_reason, text, environment)
        order = ListOrder(metric, sort, agg, mode, order_by, descending)
        with self._read() as conn:
            if check:
                listing.require_listed(conn, [sort, metric])
            return listing.list_runs(conn, utcnow(), f, order, limit=limit, offset=offset)

    def best_runs(
        self,
        metric: str,
        *,
        mode: str = "auto",
        agg: str = "best",
        experiment: str | None = None,
        top: int = 1,
    ) -> list[RankedRun]:
        """Runs ranked by `metric`: best epoch of each run (`agg="best"`) or its last value."""
        with self._read() as conn:
            return listing.best_runs(
                conn, utcnow(), metric, mode=mode, agg=agg, experiment=experiment, top=top
            )

    def run_details(
        self, refs: Iterable[str], *, keys: Sequence[str] | None = None, history: bool = True
    ) -> list[RunDetail]:
        """The runs `refs` name (each once, in the order given) with their summaries,
        checkpoints and, with `history`, epoch history (of `keys` only, when given).

        Raises:
            MetricNotFound: one of `keys` was recorded by none of the runs.
        """
        if isinstance(refs, str):
            raise TypeError("run_details takes a list of run references, not one string")
        with self._read() as conn:
            return queries.run_details(conn, refs, utcnow(), keys=keys, history=history)

    def run_history(
        self, ref: str, keys: Sequence[str] | None = None, *, batches: bool = False
    ) -> tuple[RunRecord, list[MetricPoint]]:
        """The run `ref` names and its epoch (or batch) metric points (`metric_history`).

        Raises:
            MetricNotFound: one of `keys` is not recorded by the run at that level.
        """
        with self._read() as conn:
            run, _ = queries.run_and_keys(conn, ref, utcnow(), keys, batches=batches)
            return run, queries.metric_history(conn, run.id, keys, batches=batches)

    def metric_history(
        self, run_id: str, keys: Iterable[str] | None = None, *, batches: bool = False
    ) -> list[MetricPoint]:
        """The run's points of `keys` (all without), epoch-level or with `batches` batch-level,
        ordered by epoch, batch and key."""
        with self._read() as conn:
            return queries.metric_history(conn, run_id, keys, batches=batches)

    def summaries(self, run_id: str) -> dict[str, SummaryRecord]:
        """Each metric's summary for the run (count, first, last, min, max), by key."""
        with self._read() as conn:
            return queries.summaries(conn, run_id)

    def checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        """The run's recorded checkpoints in the order they were recorded."""
        with self._read() as conn:
            return queries.checkpoints(conn, run_id)

    def pending_uploads(self, run_id: str | None = None) -> list[CheckpointRecord]:
        """Checkpoints whose copy in the artifact store was never confirmed, oldest first."""
        with self._read() as conn:
            return queries.pending_uploads(conn, run_id)

    def metric_keys(self, run_id: str | None = None) -> list[str]:
        """The epoch-level metric keys of the run, or of every run without `run_id`."""
        with self._read() as conn:
            return queries.metric_keys(conn, run_id)

    def run_ids(self) -> list[str]:
        """The id of every run in the store, oldest first."""
        with self._read() as conn:
            return queries.run_ids(conn)

    def destinations(self) -> dict[str, RunDestination | None]:
        """Every run of this (spool) database with the destination noted for it, None for a run
        spooled by a tracker that noted none."""
        with self._read() as conn:
            return queries.destinations(conn)

    def export_run(self, ref: str) -> RunBundle:
        """The run `ref` names with every metric point and checkpoint, for `import_runs`."""
        from tracker.store import transfer

        with self._read() as conn:
            return transfer.export_run(conn, queries.resolve_run_id(conn, ref, utcnow()))

    # -- the web UI's reads ---------------------------------------------------------------------

    def runs_page(
        self,
        filters: RunFilter,
        order: ListOrder,
        *,
        metrics: Sequence[str] = (),
        limit: int = 50,
        offset: int = 0,
    ) -> RunsPage:
        """One page of `list_runs(check=True)` with the total count of the filtered runs and
        the summaries of `metrics` for the runs of the page: what the runs table shows, read in
        one transaction without any metric history."""
        with self._read() as conn:
            now = utcnow()
            return listing.runs_page(conn, now, filters, order, metrics, limit=limit, offset=offset)

    def metric_series(
        self,
        ref: str,
        keys: Sequence[str] | None,
        read: Callable[[RunRecord, series_reads.SeriesSource], T],
        *,
        batches: bool,
        after_epoch: int | None = None,
        epochs: tuple[int, int] | None = None,
    ) -> tuple[RunRecord, dict[str, T]]:
        """The run `ref` names and, per key (every key at that level when `keys` is empty),
        what `read` makes of its series after `after_epoch` and within `epochs`: all its
        `(epoch, step, value)` rows (`series_reads.all_rows`), or at batch level its block summaries
        and the points of a few spans (a chart of a million points never needs them all).
        Read in one snapshot: blocks and points agree while a run writes.

        Raises:
            MetricNotFound: one of `keys` is not recorded by the run at that level.
        """
        with self._read(snapshot=True) as conn:
            run, keys = queries.run_and_keys(conn, ref, utcnow(), keys, batches=batches)
            source = partial(
                series_reads.SeriesSource,
                conn,
                run.id,
                batches=batches,
                after_epoch=after_epoch,
                epochs=epochs,
            )
            return run, {k: read(run, source(k)) for k in keys}


def _epoch_points(
    epoch: int, metrics: Mapping[str, float], batches: Iterable[MetricPoint], at: datetime
) -> list[MetricPoint]:
    """The epoch's values as points (at the epoch's end), followed by its batch points."""
    return [MetricPoint(str(k), epoch, None, float(v), at) for k, v in metrics.items()] + list(
        batches
    )


def open_store(url: str | None = None, **kwargs: Any) -> Store:
    """Open (and on first use, create) the run store at `url`."""
    return Store(url, **kwargs)
