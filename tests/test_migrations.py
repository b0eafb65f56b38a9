"""Migrations are the only way a schema is made; the models and the migrated schema agree."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from tracker import open_store
from tracker.db import current_revision, make_engine
from tracker.errors import SchemaTooNew
from tracker.migrate import downgrade, script_heads, script_revisions, upgrade
from tracker.models import Base
from tracker.schema import HEAD, KNOWN_REVISIONS

from .helpers import seed_run

TABLES = {"experiments", "runs", "params", "tags", "metrics", "metric_summaries", "checkpoints"}


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
