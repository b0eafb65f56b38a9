"""The run store: the only place that opens connections and transactions.

One public method is one short transaction (`with self._write() as conn` / `self._read()`);
helpers in `queries` and `writes` take the connection as an argument. Nothing here keeps a
transaction open between calls, so a training process writing an epoch never blocks `tracker runs
list` in another shell.

Statements are SQLAlchemy Core on the tables of `tracker.store.tables`. The ORM
(`tracker.store.models`) is imported only when runs move between stores (`import_runs`,
`export_run`, through `tracker.store.transfer`), so query commands start without it.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, delete, insert, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from tracker.clock import DEFAULT_HEARTBEAT_S, heartbeat_deadline, shown_status, utcnow
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
from tracker.store import queries, writes
from tracker.store.db import SQLITE_BUSY_TIMEOUT_S, WRITE, make_engine, wrap_db_error
from tracker.store.revisions import check_schema
from tracker.store.tables import (
    batch_blocks,
    checkpoints,
    metric_summaries,
    metrics,
    params,
    run_destinations,
    runs,
    stored_value,
    tags,
)
from tracker.values import plain

T = TypeVar("T")

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from typing_extensions import Unpack

    from tracker.store.queries import ListOptions, ListOrder
    from tracker.store.transfer import ImportResult, RunBundle

_LOCK_RETRIES = 2  # busy_timeout already waits; one more try covers a checkpoint race


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
        self._write_engine = self.engine.execution_options(**{WRITE: True})

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

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction; with `snapshot`, every statement in it sees the same data on
        PostgreSQL too (REPEATABLE READ; SQLite's transactions always do)."""
        try:
            with self.engine.connect() as conn:
                if snapshot and conn.dialect.name == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except DBAPIError as e:
            if isinstance(e, IntegrityError):
                raise
            raise wrap_db_error(self.engine, e) from e

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _driver_write(self) -> Iterator[writes.DriverCursor]:
        """The per-epoch hot path: the driver's own cursor in a write transaction, which costs
        less than a SQLAlchemy Connection for the same statements (bench/RESULTS.md, section 9);
        this runs between the training steps. Driver errors come out as SQLAlchemy's, like every
        other method's."""
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            raw = self.engine.raw_connection()  # unlike connect(), it leaves driver errors bare
        except dbapi.Error as e:
            raise DBAPIError.instance(None, None, e, dbapi.Error) from e
        try:
            with writes.driver_transaction(raw, self.engine.dialect) as conn:
                yield conn
        except dbapi.Error as e:
            raw.invalidate()  # whatever state it is in, the pool gets a fresh one
            raise DBAPIError.instance(None, None, e, dbapi.Error) from e
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()

    @contextmanager
    def _orm_write(self) -> Iterator[Session]:
        from sqlalchemy.orm import Session

        with Session(self._write_engine, expire_on_commit=False) as s, s.begin():
            yield s

    def _write_tx(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one write transaction, retried while SQLite reports a lock (`_retrying`)."""

        def once() -> T:
            with self._write() as conn:
                return fn(conn)

        return self._retrying(once)

    def _retrying(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one write transaction, retrying when SQLite reports a lock held past the timeout."""
        for attempt in range(_LOCK_RETRIES):
            try:
                return fn(*args, **kwargs)
            except OperationalError as e:
                locked = "locked" in str(e.orig) or "busy" in str(e.orig)
                if not locked or attempt == _LOCK_RETRIES - 1:
                    raise wrap_db_error(self.engine, e) from e
                time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
            except DBAPIError as e:
                if isinstance(e, IntegrityError):
                    raise
                raise wrap_db_error(self.engine, e) from e
        raise AssertionError("unreachable")

    # -- writing a run --------------------------------------------------------------------------

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
        row: dict[str, Any] = {
            "id": run_id,
            "name": name or writes.generated_name(run_id),
            "status": "running",
            "stop_details": {},
            "started_at": now,
            "heartbeat_at": now,
            "heartbeat_deadline": heartbeat_deadline(now, heartbeat_interval),
            "epochs_planned": plain(epochs_planned),
            "epochs_done": 0,
            "fit_params": _as_stored(fit_params),
            "environment": _as_stored(environment),
            "model": _as_stored(model),
            "references": [],
        }

        encoded_params = {str(k): writes.encode_param(v) for k, v in (params or {}).items()}
        encoded_tags = {str(k): writes.encode_tag(v) for k, v in (tags or {}).items()}

        def tx() -> None:
            with self._driver_write() as conn:  # one round trip to PostgreSQL
                writes.insert_run(conn, row, experiment, encoded_params, encoded_tags)

        self._retrying(tx)
        status, reason = shown_status("running", None, row.pop("heartbeat_deadline"), utcnow())
        return RunRecord(
            **{**row, "status": status},
            experiment=experiment,
            stop_reason=reason,
            ended_at=None,
            last_epoch=None,
            params={k: json.loads(v) for k, v in encoded_params.items()},
            tags=encoded_tags,
        )

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
        points = [MetricPoint(str(k), epoch, None, float(v), now) for k, v in metrics.items()]
        points.extend(batches)
        deadline = heartbeat_deadline(now, heartbeat_interval)

        def tx() -> None:
            with self._driver_write() as conn:
                writes.epoch_done(conn, run_id, epoch, now, deadline, points)

        self._retrying(tx)

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
        points = [MetricPoint(str(k), epoch, None, float(v), epoch_at) for k, v in metrics.items()]
        points.extend(batches)
        deadline = heartbeat_deadline(epoch_at, heartbeat_interval)
        details = _as_stored(stop_details)

        def tx() -> None:
            with self._driver_write() as conn:
                writes.epoch_done(conn, run_id, epoch, epoch_at, deadline, points)
                writes.finish_run(
                    conn,
                    run_id,
                    status=status,
                    stop_reason=stop_reason,
                    stop_details=details,
                    at=now,
                )

        self._retrying(tx)

    def discard_epochs(self, run_id: str, from_epoch: int) -> int:
        """Forget what the run recorded for `from_epoch` and every later epoch, before they are
        run again (a resumed `fit` with `initial_epoch` at or below the last recorded epoch).

        Re-running from epoch k replaces what the run held for epoch k and every later epoch, as
        re-running them would: the newer timeline wins. Their metric points go, epoch and batch
        level; the run's summaries (what `best` and `runs list` rank by) are rebuilt from the
        points that remain, `epochs_done` becomes the number of epochs left and `last_epoch` the
        latest of them (None if none). Checkpoint rows stay: their files are facts on disk. One
        transaction; the per-epoch write never pays for it.

        Returns:
            How many epochs (with epoch-level points) were discarded.

        Raises:
            RunNotFound: no run has the id `run_id`.
        """

        def tx(conn: Connection) -> int:
            return writes.discard_epochs(conn, run_id, from_epoch)

        return self._write_tx(tx)

    def log_batch_metrics(self, run_id: str, points: Iterable[MetricPoint]) -> int:
        """Store batch-level points in bulk (one transaction for all of them). Returns the count."""
        rows = list(points)
        if not rows:
            return 0

        def tx() -> None:
            with self._driver_write() as conn:
                writes.insert_points(conn, run_id, rows)

        self._retrying(tx)
        return len(rows)

    def add_checkpoint(
        self,
        run_id: str,
        *,
        path: str,
        kind: str,
        source: str,
        size: int,
        sha256: str,
        epoch: int | None = None,
        batch: int | None = None,
        monitor: str | None = None,
        value: float | None = None,
        is_best: bool = False,
        at: datetime | None = None,
        artifact_root: str | None = None,
        artifact_key: str | None = None,
        uploaded: bool = False,
    ) -> CheckpointRecord:
        """Record a checkpoint file; with `artifact_key`, also the copy the artifact store holds
        (`uploaded`) or is about to receive (see `mark_uploaded`)."""
        value = stored_value(value)

        row: dict[str, Any] = {
            "run_id": run_id,
            "epoch": epoch,
            "batch": batch,
            "path": path,
            "kind": kind,
            "source": source,
            "monitor": monitor,
            "value": value,
            "is_best": is_best,
            "size": size,
            "sha256": sha256,
            "created_at": at or utcnow(),
            "artifact_root": artifact_root,
            "artifact_key": artifact_key,
            "uploaded_at": (at or utcnow()) if uploaded and artifact_key else None,
        }

        def tx(conn: Connection) -> CheckpointRecord:
            stmt = insert(checkpoints).values(**row).returning(checkpoints.c.id)
            return CheckpointRecord(id=conn.execute(stmt).scalar_one(), **row)

        return self._write_tx(tx)

    def mark_uploaded(self, run_id: str, artifact_key: str, sha256: str) -> int:
        """Confirm the artifact-store copy of the run's checkpoints with this key and hash (the
        same bytes recorded twice share one copy); how many rows were confirmed."""
        c = checkpoints.c

        def tx(conn: Connection) -> int:
            stmt = (
                update(checkpoints)
                .where(c.run_id == run_id, c.artifact_key == artifact_key)
                .where(c.sha256 == sha256, c.uploaded_at.is_(None))
                .values(uploaded_at=utcnow())
            )
            return conn.execute(stmt).rowcount

        return self._write_tx(tx)

    def record_upload(self, checkpoint_id: int, *, artifact_root: str, artifact_key: str) -> None:
        """The checkpoint's copy is now confirmed at `artifact_root`/`artifact_key`."""

        def tx(conn: Connection) -> None:
            conn.execute(
                update(checkpoints)
                .where(checkpoints.c.id == checkpoint_id)
                .values(
                    artifact_root=artifact_root,
                    artifact_key=artifact_key,
                    uploaded_at=utcnow(),
                )
            )

        self._write_tx(tx)

    def pending_uploads(self, run_id: str | None = None) -> list[CheckpointRecord]:
        """Checkpoints whose copy in the artifact store was never confirmed, oldest first."""
        with self._read() as conn:
            return queries.pending_uploads(conn, run_id)

    def heartbeat(self, run_id: str, interval: float = DEFAULT_HEARTBEAT_S) -> None:
        """Note that the run's process is alive: the run counts as crashed only once its new
        deadline (`clock.heartbeat_deadline`) passes without another beat."""
        now = utcnow()

        def tx() -> None:
            with self._driver_write() as conn:
                writes.beat(conn, run_id, now, heartbeat_deadline(now, interval))

        self._retrying(tx)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Replace run-level JSON facts learned after the start (model, references, fit_params,
        environment, epochs_planned, stop_details), each stored as `values.plain` gives it."""
        allowed = {
            "model",
            "references",
            "fit_params",
            "environment",
            "epochs_planned",
            "stop_details",
        }
        if unknown := set(fields) - allowed:
            raise ValueError(f"cannot update run fields {sorted(unknown)}")
        stored = {k: plain(v) for k, v in fields.items()}

        def tx(conn: Connection) -> None:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**stored))

        self._write_tx(tx)

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
        details = _as_stored(stop_details)

        def tx() -> None:
            with self._driver_write() as conn:  # one round trip to PostgreSQL: the end of `fit`
                writes.finish_run(
                    conn,
                    run_id,
                    status=status,
                    stop_reason=stop_reason,
                    stop_details=details,
                    at=now,
                )

        self._retrying(tx)

    def resume_run(
        self,
        ref: str,
        *,
        epochs_planned: int | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_S,
    ) -> RunRecord:
        """Put a past run back in state `running` so a new `fit` can append epochs to it."""
        now = utcnow()

        def tx(conn: Connection) -> str:
            run_id = queries.resolve_run_id(conn, ref, now)
            values: dict[str, Any] = {
                "status": "running",
                "stop_reason": None,
                "stop_details": {},
                "ended_at": None,
                "heartbeat_at": now,
                "heartbeat_deadline": heartbeat_deadline(now, heartbeat_interval),
            }
            if epochs_planned is not None:
                values["epochs_planned"] = plain(epochs_planned)
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            return run_id

        return self.get_run(self._write_tx(tx))

    def set_tags(self, ref: str, tags: Mapping[str, Any]) -> RunRecord:
        """Add or replace tags of the run `ref` names; the run as it now stands."""

        def tx(conn: Connection) -> str:
            run_id = queries.resolve_run_id(conn, ref, utcnow())
            writes.put_tags(conn, run_id, tags)
            return run_id

        return self.get_run(self._write_tx(tx))

    def delete_runs(
        self, run_ids: Iterable[str], *, progress: Callable[[int], None] | None = None
    ) -> int:
        """Delete runs with everything they recorded, 100 runs a transaction; `progress` hears
        how many were deleted by each. Checkpoint files on disk are left alone."""
        ids = list(run_ids)

        def tx(chunk: list[str]) -> int:
            with self._write() as conn:
                for table in (
                    metrics,
                    batch_blocks,
                    metric_summaries,
                    checkpoints,
                    params,
                    tags,
                    run_destinations,
                ):
                    conn.execute(delete(table).where(table.c.run_id.in_(chunk)))
                return conn.execute(delete(runs).where(runs.c.id.in_(chunk))).rowcount

        deleted = 0
        for i in range(0, len(ids), 100):
            n = self._retrying(tx, ids[i : i + 100])
            deleted += n
            if progress is not None:
                progress(n)
        return deleted

    def import_runs(self, bundles: Iterable[RunBundle]) -> ImportResult:
        """Add whole runs (or what they lack) in one transaction; see `tracker.store.transfer`."""
        from tracker.store import transfer

        bundles = list(bundles)

        def tx() -> ImportResult:
            result = transfer.ImportResult()
            with self._orm_write() as s:
                transfer.import_runs(s, bundles, result)
            return result

        return self._retrying(tx)

    def set_destination(self, run_id: str, *, url: str, database_id: str | None) -> None:
        """Note, in a spool file, the database the run was meant for: its identity when it is
        known, and its URL, which is stored without its password (`config.password_free`)."""
        row = {"url": password_free(url), "database_id": database_id}

        def tx(conn: Connection) -> None:
            conn.execute(delete(run_destinations).where(run_destinations.c.run_id == run_id))
            conn.execute(insert(run_destinations), [{"run_id": run_id, **row}])

        self._write_tx(tx)

    # -- reading --------------------------------------------------------------------------------

    def destinations(self) -> dict[str, RunDestination | None]:
        """Every run of this (spool) database with the destination noted for it, None for a run
        spooled by a tracker that noted none."""
        with self._read() as conn:
            return queries.destinations(conn)

    def resolve_run(self, ref: str) -> str:
        """The id of the run `ref` names: a full id, a unique id prefix, a unique name, `latest`."""
        with self._read() as conn:
            return queries.resolve_run_id(conn, ref, utcnow())

    def get_run(self, ref: str) -> RunRecord:
        """The run `ref` names: a full id, a unique id prefix, `latest` or a name
        (`queries.resolve_run_id`)."""
        with self._read() as conn:
            now = utcnow()
            return queries.run_record(conn, queries.resolve_run_id(conn, ref, now), now)

    def list_runs(self, **filters: Unpack[ListOptions]) -> list[RankedRun]:
        """See `queries.list_runs` for the filters."""
        with self._read() as conn:
            return queries.list_runs(conn, utcnow(), **filters)

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
            return queries.best_runs(
                conn, utcnow(), metric, mode=mode, agg=agg, experiment=experiment, top=top
            )

    def summaries(self, run_id: str) -> dict[str, SummaryRecord]:
        """Each metric's summary for the run (count, first, last, min, max), by key."""
        with self._read() as conn:
            return queries.summaries(conn, run_id)

    def metric_history(
        self, run_id: str, keys: Iterable[str] | None = None, *, batches: bool = False
    ) -> list[MetricPoint]:
        """The run's points of `keys` (all without), epoch-level or with `batches` batch-level,
        ordered by epoch, batch and key."""
        with self._read() as conn:
            return queries.metric_history(conn, run_id, keys, batches=batches)

    def checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        """The run's recorded checkpoints in the order they were recorded."""
        with self._read() as conn:
            return queries.checkpoints(conn, run_id)

    def metric_keys(self, run_id: str | None = None) -> list[str]:
        """The epoch-level metric keys of the run, or of every run without `run_id`."""
        with self._read() as conn:
            return queries.metric_keys(conn, run_id)

    def export_run(self, ref: str) -> RunBundle:
        """The run `ref` names with every metric point and checkpoint, for `import_runs`."""
        from tracker.store import transfer

        with self._read() as conn:
            return transfer.export_run(conn, queries.resolve_run_id(conn, ref, utcnow()))

    def run_ids(self) -> list[str]:
        """The id of every run in the store."""
        with self._read() as conn:
            return queries.run_ids(conn)

    def get_runs(self, refs: Iterable[str]) -> list[RunRecord]:
        """The runs `refs` name, each once, in the order given; every one must resolve."""
        with self._read() as conn:
            now = utcnow()
            return [
                queries.run_record(conn, i, now) for i in queries.resolve_run_ids(conn, refs, now)
            ]

    def list_runs_checked(self, **filters: Unpack[ListOptions]) -> list[RankedRun]:
        """`list_runs`, but a `metric` or `sort` that no run recorded raises `MetricNotFound`
        (naming the metrics that exist) instead of showing an empty column."""
        with self._read() as conn:
            wanted = [m for m in (filters.get("sort"), filters.get("metric")) if m]
            known = queries.metric_keys(conn, None)
            if known:
                queries.require_metrics(wanted, known, "in this database")
            return queries.list_runs(conn, utcnow(), **filters)

    def run_detail(self, ref: str, *, history: bool = True) -> RunDetail:
        """The run `ref` names with its summaries, checkpoints and epoch history."""
        with self._read() as conn:
            now = utcnow()
            return queries.run_detail(
                conn, queries.resolve_run_id(conn, ref, now), now, history=history
            )

    def run_details(
        self, refs: Iterable[str], keys: Iterable[str] | None = None
    ) -> list[RunDetail]:
        """`run_detail` of several runs (each once) with the history of `keys` only.

        Raises:
            MetricNotFound: one of `keys` was recorded by none of the runs.
        """
        keys = None if keys is None else list(keys)
        with self._read() as conn:
            now = utcnow()
            ids = queries.resolve_run_ids(conn, refs, now)
            details = [queries.run_detail(conn, i, now, keys=keys, history=True) for i in ids]
        if keys:
            known = {k for d in details for k in d.summaries}
            queries.require_metrics(keys, known, "in these runs")
        return details

    def run_history(
        self, ref: str, keys: Iterable[str] | None = None, *, batches: bool = False
    ) -> tuple[RunRecord, list[MetricPoint]]:
        """The run `ref` names and its epoch (or batch) metric points.

        Raises:
            MetricNotFound: one of `keys` is not recorded by the run.
        """
        keys = None if keys is None else list(keys)
        with self._read() as conn:
            now = utcnow()
            run = queries.run_record(conn, queries.resolve_run_id(conn, ref, now), now)
            if keys:
                known = (queries.batch_metric_keys if batches else queries.metric_keys)(
                    conn, run.id
                )
                level = "batch" if batches else "epoch"
                queries.require_metrics(keys, known, f"at {level} level in run {run.short_id}")
            return run, queries.metric_history(conn, run.id, keys, batches=batches)

    # -- the web UI's reads (read-only) ---------------------------------------------------------

    def runs_page(
        self,
        *,
        metrics: Sequence[str] = (),
        limit: int = 50,
        offset: int = 0,
        **filters: Unpack[ListOrder],
    ) -> RunsPage:
        """One page of `list_runs_checked` (same filters and order) with the total count of the
        filtered runs and the summaries of `metrics` for the runs of the page: what the runs
        table shows, read in one transaction without any metric history."""
        where: dict[str, Any] = dict(filters)
        page_filters = {
            k: where.pop(k) for k in ("metric", "sort", "agg", "mode", "order_by") if k in where
        }
        with self._read() as conn:
            now = utcnow()
            wanted = [m for m in (page_filters.get("sort"), *metrics) if m]
            if set(wanted) - queries.recorded_keys(conn, wanted):  # the whole list only then
                known = queries.metric_keys(conn, None)
                if known:
                    queries.require_metrics(wanted, known, "in this database")
            total = queries.count_listed(
                conn, now, **{k: v for k, v in where.items() if k != "descending"}
            )
            ranked = queries.list_runs(
                conn, now, limit=limit, offset=offset, **page_filters, **where
            )
            ids = [r.run.id for r in ranked]
            return RunsPage(total, ranked, queries.summaries_of(conn, ids, list(metrics)))

    def metric_series(
        self,
        ref: str,
        keys: Sequence[str] | None,
        *,
        batches: bool,
        after_epoch: int | None = None,
        epochs: tuple[int, int] | None = None,
    ) -> tuple[RunRecord, dict[str, list[Any]]]:
        """The run `ref` names and, per key (every key at that level when `keys` is empty),
        its `(epoch, step, value)` rows after `after_epoch` and within `epochs`.

        Raises:
            MetricNotFound: one of `keys` is not recorded by the run at that level.
        """
        with self._read() as conn:
            now = utcnow()
            run = queries.run_record(conn, queries.resolve_run_id(conn, ref, now), now)
            known = (queries.batch_metric_keys if batches else queries.metric_keys)(conn, run.id)
            if keys:
                level = "batch" if batches else "epoch"
                queries.require_metrics(keys, known, f"at {level} level in run {run.short_id}")
            rows = {
                k: queries.series_rows(
                    conn, run.id, k, batches=batches, after_epoch=after_epoch, epochs=epochs
                )
                for k in (keys or known)
            }
            return run, rows

    def batch_series(
        self,
        ref: str,
        keys: Sequence[str] | None,
        read: Callable[[RunRecord, queries.BatchSource], T],
        *,
        after_epoch: int | None = None,
        epochs: tuple[int, int] | None = None,
    ) -> tuple[RunRecord, dict[str, T]]:
        """As `metric_series(batches=True)`, but each key's series is what `read` makes of it
        from a `BatchSource` (block summaries, points of a few spans, or all points), read in
        one snapshot (blocks and points agree while a run writes): a chart of a million
        points never needs them all.

        Raises:
            MetricNotFound: one of `keys` is not recorded by the run at batch level.
        """
        with self._read(snapshot=True) as conn:
            now = utcnow()
            run = queries.run_record(conn, queries.resolve_run_id(conn, ref, now), now)
            if not keys or not queries.has_batch_metrics(conn, run.id, keys):
                known = queries.batch_metric_keys(conn, run.id)
                if keys:
                    queries.require_metrics(keys, known, f"at batch level in run {run.short_id}")
                keys = known
            return run, {
                k: read(run, queries.BatchSource(conn, run.id, k, after_epoch, epochs))
                for k in keys
            }


@dataclass(frozen=True)
class RunsPage:
    total: int  # runs matching the filters, all pages
    runs: list[RankedRun]
    summaries: dict[str, dict[str, SummaryRecord]]  # run id -> metric key -> summary


def _as_stored(facts: Mapping[str, Any] | None) -> dict[str, Any]:
    """`facts` as a JSON column gives them back (tuples become lists, keys strings, numpy values
    numbers and lists): `values.plain` of them."""
    return plain(facts or {})


def open_store(url: str | None = None, **kwargs: Any) -> Store:
    """Open (and on first use, create) the run store at `url`."""
    return Store(url, **kwargs)
