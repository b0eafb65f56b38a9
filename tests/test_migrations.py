"""Migrations are the only way a schema is made; the models and the migrated schema agree."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from tracker import open_store
from tracker.errors import SchemaOutOfDate, SchemaTooNew
from tracker.store.db import make_engine
from tracker.store.migrate import downgrade, script_heads, script_revisions, upgrade
from tracker.store.models import Base
from tracker.store.revisions import HEAD, KNOWN_REVISIONS, current_revision
from tracker.store.series_reads import all_rows

from .helpers import seed_run

TABLES = {
    "experiments",
    "runs",
    "params",
    "tags",
    "metrics",
    "metric_summaries",
    "batch_blocks",
    "checkpoints",
    "database_identity",
    "run_destinations",
}


def test_single_head_and_known_revisions_match_scripts():
    assert script_heads() == (HEAD,)
    assert tuple(script_revisions()) == KNOWN_REVISIONS


def _diff(engine):
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def test_upgrade_from_empty_matches_models(db_url):
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == HEAD
    assert _diff(engine) == []
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_downgrade_to_base_and_upgrade_again(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    downgrade(engine, "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine)
    assert _diff(engine) == []
    engine.dispose()
    with open_store(db_url) as s:
        assert seed_run(s, {"loss": [1.0]})


def test_open_store_migrates_an_empty_database(db_url):
    with open_store(db_url) as s:
        assert current_revision(s.engine) == HEAD


def test_a_database_gets_its_identity_once(db_url, tmp_path):
    with open_store(db_url) as s:
        made = s.identity
    with open_store(db_url) as s:
        assert s.identity == made and made is not None and len(made) == 32
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM database_identity")).scalars().all() == [made]
    engine.dispose()
    with open_store(f"sqlite:///{tmp_path}/another.db") as other:
        assert other.identity != made


def test_newer_schema_is_refused_and_left_alone(db_url):
    with open_store(db_url) as s:
        run_id = seed_run(s, {"loss": [1.0]})
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaTooNew, match="9999"):
        open_store(db_url)
    assert current_revision(engine) == "9999"
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE alembic_version SET version_num = '{HEAD}'"))
    engine.dispose()
    with open_store(db_url) as s:
        assert s.get_run(run_id).epochs_done == 1


def test_sqlite_connection_settings(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/p.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
    engine.dispose()


# -- released schemas with data ------------------------------------------------------------------

OLD_REVISIONS = [r for r in KNOWN_REVISIONS if r != HEAD]


def _assert_legacy_data_usable(store):
    from tracker import checkpoint_files

    runs = {r.run.name: r.run for r in store.list_runs(experiment="legacy")}
    assert set(runs) == {"old-best", "old-nan"}
    best = store.best_runs("val_loss", top=5)
    assert [(b.run.name, b.epoch, b.value) for b in best] == [
        ("old-best", 1, 0.3),
        ("old-nan", 1, 0.8),
    ]
    _assert_batch_blocks_backfilled(store, runs["old-best"].id)
    loss = [p.value for p in store.metric_history(runs["old-nan"].id, ["loss"])]
    assert loss[0] == 1.2 and math.isnan(loss[1])
    assert store.metric_history(runs["old-nan"].id, ["val_loss"])[0].value == math.inf
    assert runs["old-best"].params == {"lr": 0.01} and runs["old-best"].tags == {"team": "core"}
    (ck,) = store.checkpoints(runs["old-best"].id)
    assert ck.epoch == 1 and checkpoint_files.state(ck) == "missing"
    # and the upgraded store keeps working for new runs
    seed_run(store, {"val_loss": [0.1]}, name="new-run")
    assert store.best_runs("val_loss")[0].run.name == "new-run"


def _assert_batch_blocks_backfilled(store, run_id):
    """The upgrade summarised the batch points already stored: a chart drawn from the blocks
    equals one drawn from every point."""
    from tests.data.make_schema_db import BATCHES
    from tracker.ui import series as ser

    rows = store.metric_series(run_id, ["loss"], all_rows, batches=True)[1]["loss"]
    assert [(e, s, v) for e, s, v in rows] == BATCHES
    with store.engine.connect() as conn:
        blocks = conn.exec_driver_sql("SELECT epoch, block, count FROM batch_blocks").all()
    assert sorted(blocks) == [(e, b, 64 if b < 2 else 22) for e in range(2) for b in range(3)]
    for max_points, x_min, x_max in [(12, None, None), (30, 0.3, 1.9), (3, None, None)]:
        _, got = store.metric_series(
            run_id,
            ["loss"],
            lambda run, src, n=max_points, lo=x_min, hi=x_max: ser.build_from_blocks(
                src, steps_per_epoch=None, max_points=n, x_min=lo, x_max=hi
            ),
            batches=True,
        )
        want = ser.build(
            rows,
            batches=True,
            steps_per_epoch=None,
            max_points=max_points,
            x_min=x_min,
            x_max=x_max,
        )
        assert got["loss"] == want and want.total > len(want.x)


@pytest.mark.parametrize("rev", OLD_REVISIONS)
def test_upgrade_sqlite_file_from_released_schema(tmp_path, rev):
    src = Path(__file__).parent / "data" / f"schema_{rev}.db"
    db = tmp_path / "old.db"
    shutil.copy(src, db)
    with open_store(f"sqlite:///{db}") as store:  # SQLite files are upgraded on open
        assert current_revision(store.engine) == HEAD
        assert _diff(store.engine) == []
        assert store.identity is not None  # made by the upgrade
        _assert_legacy_data_usable(store)


@pytest.mark.parametrize("rev", OLD_REVISIONS)
def test_upgrade_postgres_from_released_schema(pg_url, rev):
    from tests.data.make_schema_db import populate

    populate(pg_url, rev)
    with pytest.raises(SchemaOutOfDate, match="tracker db upgrade"):
        open_store(pg_url)  # a shared server database is never upgraded behind anyone's back
    engine = make_engine(pg_url)
    assert current_revision(engine) == rev
    upgrade(engine)
    assert _diff(engine) == []
    engine.dispose()
    with open_store(pg_url) as store:
        assert store.identity is not None
        _assert_legacy_data_usable(store)


def test_summary_indexes_after_upgrade(db_url):
    """Regression for the `best` growth benchmark (issue 7): ranking walks an index."""
    engine = make_engine(db_url)
    upgrade(engine)
    names = {ix["name"] for ix in inspect(engine).get_indexes("metric_summaries")}
    assert {
        "ix_metric_summaries_key_min",
        "ix_metric_summaries_key_max",
        "ix_metric_summaries_key_last",
    } <= names
    engine.dispose()
