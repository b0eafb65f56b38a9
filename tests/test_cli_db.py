"""`tracker db upgrade|current|downgrade`, which work on a bare engine, never through a Store."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from tracker import Store
from tracker.store.revisions import HEAD

from .cli_support import fails, ok_json, run
from .helpers import seed_three


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_and_current(db_url):
    empty = ok_json(db_url, "db", "current")
    assert empty == {"url": empty["url"], "revision": None, "head": HEAD, "is_head": False}
    assert "none: empty database" in run(db_url, "db", "current").stdout
    assert _tables(db_url) == set()  # looking did not create anything
    result = run(db_url, "db", "upgrade")
    assert result.exit_code == 0, result.stderr
    assert f"upgraded from empty to {HEAD} (head)" in result.stdout
    assert {"runs", "metrics", "checkpoints"} <= _tables(db_url)
    assert ok_json(db_url, "db", "current")["is_head"] is True
    assert run(db_url, "db", "current").stdout.splitlines()[1] == f"{HEAD} (head)"
    again = run(db_url, "db", "upgrade")
    assert again.exit_code == 0 and f"already at {HEAD} (head)" in again.stdout


def test_current_csv(db_url):
    run(db_url, "db", "upgrade")
    lines = run(db_url, "db", "current", "--format", "csv").stdout.splitlines()
    assert lines[0] == "url,revision,head,is_head"
    assert lines[1].endswith(f",{HEAD},{HEAD},True")


def test_url_password_is_masked(pg_url):
    password = pg_url.split("postgres:", 1)[1].split("@", 1)[0]
    out = run(pg_url, "db", "current", "--format", "json")
    assert out.exit_code == 0, out.stderr
    assert password not in out.stdout and "postgres:***@" in out.stdout


@pytest.mark.parametrize("command", [["runs", "list"], ["db", "current"], ["db", "upgrade"]])
def test_wrong_password_is_one_line_and_never_echoed(pg_url, command):
    """The test server really checks passwords (scram-sha-256 over TCP)."""
    password = pg_url.split("postgres:", 1)[1].split("@", 1)[0]
    wrong = pg_url.replace(f"postgres:{password}@", "postgres:Wr0ng-s3cret@", 1)
    err = fails(wrong, *command)
    assert "password authentication failed" in err
    assert "Wr0ng-s3cret" not in err and password not in err


def test_downgrade_needs_confirmation(db_url, store: Store):
    seed_three(store)
    store.close()
    assert "pass --yes" in fails(db_url, "db", "downgrade", "base")
    assert len(ok_json(db_url, "runs", "list")) == 3
    result = run(db_url, "db", "downgrade", "base", "--yes")
    assert result.exit_code == 0, result.stderr
    assert f"downgraded from {HEAD} to base (no tables)" in result.stdout
    assert _tables(db_url) == set()
    assert ok_json(db_url, "db", "current")["revision"] is None
    assert run(db_url, "db", "upgrade").exit_code == 0
    assert ok_json(db_url, "runs", "list") == []


def test_downgrade_to_an_unknown_revision(db_url):
    run(db_url, "db", "upgrade")
    err = fails(db_url, "db", "downgrade", "nonsense", "--yes")
    assert "nonsense" in err
    assert ok_json(db_url, "db", "current")["is_head"] is True


def test_db_commands_do_not_open_the_store(db_url, store: Store):
    # A schema newer than this tracker: a Store refuses it, `db current` still reports it.
    store.close()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    assert "unknown to this tracker" in run(db_url, "db", "current").stdout
    assert "newer than this tracker knows" in fails(db_url, "db", "upgrade")
