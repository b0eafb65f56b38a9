"""The CLI as a whole: help, where the database comes from, errors as one line, light imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tracker import Store, open_store
from tracker.cli.main import TrackerGroup, cli
from tracker.errors import RunNotFound
from tracker.records import MetricPoint
from tracker.store.queries import STATUSES
from tracker.store.revisions import HEAD, KNOWN_REVISIONS

from .cli_support import fails, ok_json, run
from .helpers import seed_run, seed_three

COMMANDS = [
    [],
    ["runs"],
    ["runs", "list"],
    ["runs", "show"],
    ["runs", "delete"],
    ["runs", "tag"],
    ["best"],
    ["compare"],
    ["metrics"],
    ["restore"],
    ["db"],
    ["db", "upgrade"],
    ["db", "current"],
    ["db", "downgrade"],
    ["sync"],
    ["ui"],
    ["artifacts"],
    ["artifacts", "push"],
]
LEAVES = [c for c in COMMANDS if c and c not in (["runs"], ["db"], ["artifacts"])]


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tracker")
def test_help(command, flag):
    # An unreachable database: help must not open it.
    url = "postgresql+psycopg://nobody:pw@127.0.0.1:1/none"
    result = CliRunner().invoke(cli, ["--db", url, *command, flag], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Usage: ")
    if command in LEAVES or not command:
        assert "Example" in result.stdout


def test_every_command_is_covered_by_the_help_test():
    def walk(group, prefix):
        for name, cmd in group.commands.items():
            yield [*prefix, name]
            if isinstance(cmd, click.Group):
                yield from walk(cmd, [*prefix, name])

    assert sorted(walk(cli, [])) == sorted(c for c in COMMANDS if c)


def test_status_help_names_every_status():
    result = CliRunner().invoke(cli, ["runs", "list", "--help"])
    assert all(s in result.stdout for s in STATUSES)


def test_database_from_environment_then_option(tmp_path, monkeypatch):
    env_url = f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv("TRACKER_DB_URL", env_url)
    with open_store(env_url) as s:
        seed_run(s, {"loss": [1.0]}, name="from-env")
    listed = CliRunner().invoke(cli, ["runs", "list", "--format", "json"])
    assert [r["name"] for r in json.loads(listed.stdout)] == ["from-env"]
    # A bare file path is a SQLite file, and --db wins over the environment.
    other = tmp_path / "other.db"
    with open_store(f"sqlite:///{other}") as s:
        seed_run(s, {"loss": [1.0]}, name="from-option")
    assert [r["name"] for r in ok_json(str(other), "runs", "list")] == ["from-option"]


def test_default_database_is_tracker_db_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACKER_DB_URL")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["db", "current", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["url"] == f"sqlite:///{tmp_path.resolve()}/tracker.db"
    assert (tmp_path / "tracker.db").is_file()


def test_unreachable_database_is_one_line_without_password():
    url = "postgresql+psycopg://alice:s3cret@127.0.0.1:1/tracker"
    for args in (["runs", "list"], ["db", "current"], ["best"]):
        err = fails(url, *args)
        assert "cannot use database" in err and "alice:***@" in err
        assert "s3cret" not in err


def test_unknown_database_kind(tmp_path):
    err = fails("nosuchdb://host/x", "runs", "list")
    assert "nosuchdb" in err


def test_sqlite_file_in_missing_directory(tmp_path):
    err = fails(f"sqlite:///{tmp_path}/no/such/dir/t.db", "runs", "list")
    assert "cannot use database" in err and "unable to open" in err


def test_newer_schema_is_refused_in_one_line(db_url, store: Store):
    seed_three(store)
    store.close()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    for args in (["runs", "list"], ["best"], ["runs", "show", "latest"]):
        assert "newer than this tracker knows" in fails(db_url, *args)
    assert ok_json(db_url, "db", "current")["revision"] == "9999"


def test_out_of_date_postgresql_asks_for_db_upgrade(pg_url, monkeypatch):
    with open_store(pg_url) as s:
        seed_three(s)
    # Pretend this tracker ships a newer revision than the one the database has.
    newer = "9998"
    monkeypatch.setattr("tracker.store.revisions.HEAD", newer)
    monkeypatch.setattr("tracker.store.revisions.KNOWN_REVISIONS", (*KNOWN_REVISIONS, newer))
    err = fails(pg_url, "runs", "list")
    assert "run `tracker db upgrade`" in err and f"at revision {HEAD!r}" in err
    current = run(pg_url, "db", "current")
    assert current.exit_code == 0 and f"{HEAD} (not head: head is {newer}" in current.stdout
    assert ok_json(pg_url, "db", "current")["is_head"] is False


def test_tracker_errors_outside_the_store_are_mapped(tmp_path):
    # Errors of the library raised from anywhere in a command, and interrupts, end the same way.
    group = TrackerGroup("t")

    @group.command()
    @click.argument("what")
    def boom(what):
        if what == "tracker":
            raise RunNotFound("no run matches 'x'\nsecond line")
        if what == "sqlalchemy":
            raise OperationalError("SELECT 1", {}, Exception("server at postgresql://u:pw@h/db"))
        if what == "interrupt":
            raise KeyboardInterrupt
        raise ValueError("a bug")

    runner = CliRunner()
    tracker_err = runner.invoke(group, ["boom", "tracker"])
    assert (tracker_err.exit_code, tracker_err.stderr) == (1, "Error: no run matches 'x'\n")
    sa_err = runner.invoke(group, ["boom", "sqlalchemy"])
    assert (sa_err.exit_code, sa_err.stderr) == (1, "Error: server at postgresql://u:***@h/db\n")
    interrupted = runner.invoke(group, ["boom", "interrupt"])
    assert (interrupted.exit_code, interrupted.stderr) == (130, "Interrupted.\n")
    bug = runner.invoke(group, ["boom", "bug"])
    assert isinstance(bug.exception, ValueError)  # a programming error is not disguised


def test_non_finite_values_are_strict_json_strings(db_url, store: Store):
    ids = seed_three(store)
    seed_run(store, {"val_loss": [float("inf"), float("-inf"), 0.2]}, name="run-inf")
    shown = ok_json(db_url, "runs", "show", ids["c"])
    assert shown["epochs"][1]["metrics"]["val_loss"] == "NaN"
    inf = ok_json(db_url, "metrics", "run-inf")
    assert [e["metrics"]["val_loss"] for e in inf] == ["Infinity", "-Infinity", 0.2]
    listed = ok_json(db_url, "runs", "list", "--sort", "val_loss", "--agg", "last")
    assert {r["name"]: r["value"] for r in listed}["run-c"] == "NaN"


_PROBE = """
import sys
from datetime import datetime, timezone
from tracker.cli.main import cli
for args in sys.argv[2:]:
    try:
        cli.main(["--db", sys.argv[1], *args.split()], standalone_mode=False)
    except SystemExit as e:
        assert not e.code, (args, e.code)
heavy = ("tensorflow", "keras", "alembic", "matplotlib", "sqlalchemy.orm")
print(sorted(m for m in heavy if m in sys.modules))
"""


def test_query_commands_do_not_import_keras_alembic_matplotlib_or_the_orm(db_url, store: Store):
    seed_three(store)
    commands = [
        "runs list",
        "best --top 2",
        "runs show latest",
        "compare run-a run-b",
        "metrics run-a",
    ]
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, db_url, *commands],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "run-a" in out.stdout


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path):
    url = f"sqlite:///{tmp_path}/pipe.db"
    with open_store(url) as s:
        run_id = seed_run(s, {"loss": [1.0]}, name="chatty")
        now = datetime.now(timezone.utc)
        s.log_batch_metrics(run_id, [MetricPoint("loss", 0, i, 1.0, now) for i in range(30000)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli.main", "--db", url, "metrics", "chatty", "--batches"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.read(9) == b"Run chatt"
    proc.stdout.close()  # like `| head -c 9`
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) in (0, 1)
    assert err == ""
