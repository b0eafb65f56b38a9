"""The metric series a chart reads, on the driver's own cursor inside the caller's transaction:
every point of a series, or at batch level its block summaries and the points of a few spans (what
downsampling needs; a series can hold a million points)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
)

from tracker.records import (
    RunRecord,
)


def series_rows(
    conn: Connection,
    run_id: str,
    key: str,
    *,
    batches: bool,
    after_epoch: int | None = None,
    epochs: tuple[int, int] | None = None,
) -> list[tuple[int, int | None, float | None]]:
    """(epoch, step, value) rows of one metric of one run in time order (value None for NaN).

    A batch series can hold a million points: they are read on the driver's own cursor, in
    the caller's transaction, which takes half the time of SQLAlchemy's result rows and
    `MetricValue`'s per-row conversion (the same trade as the per-epoch write's).
    """
    sql = "SELECT epoch, step, value FROM metrics WHERE run_id = ? AND key = ? AND step IS "
    sql += "NOT NULL" if batches else "NULL"
    args: list[Any] = [run_id, key]
    if after_epoch is not None:
        sql += " AND epoch > ?"
        args.append(after_epoch)
    if epochs is not None:
        sql += " AND epoch BETWEEN ? AND ?"
        args += list(epochs)
    sql += " ORDER BY epoch, step, id"
    return _driver_rows(conn, sql, args)


def _driver_rows(conn: Connection, sql: str, args: Sequence[Any]) -> list[Any]:
    """Rows of `sql` (written with `?`) on the driver's own cursor, in the caller's transaction."""
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall())
    finally:
        cursor.close()


# A block: (epoch, count, first_step, last_step, last_value, min_value, min_step, max_value,
# max_step), values None for NaN (min/max None: the block holds only NaN).
BlockRow = tuple[
    int, int, int, int, float | None, float | None, int | None, float | None, int | None
]
# A span of batch points: (epoch, first step, last step), both steps included.
Span = tuple[int, int, int]


class SeriesSource:
    """One series (a metric of one run at epoch or batch level) as a chart reads it, inside the
    caller's transaction: all of its points, or at batch level its block summaries or the
    points of a few spans (what downsampling needs)."""

    def __init__(
        self,
        conn: Connection,
        run_id: str,
        key: str,
        *,
        batches: bool,
        after_epoch: int | None,
        epochs: tuple[int, int] | None,
    ) -> None:
        self.conn, self.run_id, self.key, self.batches = conn, run_id, key, batches
        self.after_epoch, self.epochs = after_epoch, epochs

    def blocks(self) -> list[BlockRow]:
        """The series' blocks (after `after_epoch`, within `epochs`) in order."""
        sql = (
            "SELECT epoch, count, first_step, last_step, last_value, min_value, min_step,"
            " max_value, max_step FROM batch_blocks WHERE run_id = ? AND key = ?"
        )
        args: list[Any] = [self.run_id, self.key]
        if self.after_epoch is not None:
            sql += " AND epoch > ?"
            args.append(self.after_epoch)
        if self.epochs is not None:
            sql += " AND epoch BETWEEN ? AND ?"
            args += list(self.epochs)
        return _driver_rows(self.conn, sql + " ORDER BY epoch, block", args)

    def points(self, spans: Sequence[Span]) -> list[tuple[int, int, float | None]]:
        """(epoch, step, value) of the points in `spans` (given in order), in order: one query
        a few hundred spans, each a seek of the batch points' index."""
        out: list[tuple[int, int, float | None]] = []
        for i in range(0, len(spans), 300):
            chunk = spans[i : i + 300]
            values = ", ".join(
                ["(CAST(? AS INTEGER), CAST(? AS INTEGER), CAST(? AS INTEGER))"] * len(chunk)
            )
            sql = f"WITH spans (e, lo, hi) AS (VALUES {values}) " + (
                # each span a seek of the index, whatever the planner's statistics say:
                # SQLite walks a CROSS JOIN's left side first, PostgreSQL a LATERAL per row
                "SELECT m.epoch, m.step, m.value FROM spans CROSS JOIN metrics m"
                " WHERE m.run_id = ? AND m.key = ? AND m.epoch = spans.e"
                " AND m.step IS NOT NULL AND m.step BETWEEN spans.lo AND spans.hi"
                " ORDER BY m.epoch, m.step, m.id"
                if self.conn.dialect.name == "sqlite"
                else "SELECT m.epoch, m.step, m.value FROM spans CROSS JOIN LATERAL"
                " (SELECT epoch, step, value, id FROM metrics WHERE run_id = ? AND key = ?"
                " AND epoch = spans.e AND step IS NOT NULL AND step BETWEEN spans.lo AND spans.hi"
                " OFFSET 0) AS m ORDER BY m.epoch, m.step, m.id"  # OFFSET 0: kept a subquery
            )
            args = [v for span in chunk for v in span] + [self.run_id, self.key]
            out += _driver_rows(self.conn, sql, args)
        return out

    def rows(self) -> list[tuple[int, int, float | None]]:
        """Every point (after `after_epoch`, within `epochs`), as `series_rows` gives them."""
        rows = series_rows(
            self.conn,
            self.run_id,
            self.key,
            batches=self.batches,
            after_epoch=self.after_epoch,
            epochs=self.epochs,
        )
        return rows  # type: ignore[return-value]


def all_rows(run: RunRecord, source: SeriesSource) -> list[tuple[int, int, float | None]]:
    """Every point of the series (`metric_series`'s reader when nothing is downsampled)."""
    return source.rows()
