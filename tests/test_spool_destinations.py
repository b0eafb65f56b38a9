"""Spooled runs remember the database they were meant for: `tracker sync` pushes each database
its own runs (one at a time or `--all`), survives being killed half-way, and never shows a
password. The spool is written by the real recorder while a real database is locked or refuses
the connection; the CLI runs in-process and as a real process."""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from tracker import Store, open_store
from tracker.config import mask_url, password_free, resolve_url
from tracker.store.tables import metrics, runs
from tracker.training.recorder import RunRecorder

from .cli_support import run
from .helpers import seed_run
from .pgcluster import Cluster

TRACKER = str(Path(sys.executable).with_name("tracker"))
EPOCHS = 3


def _record(recorder: RunRecorder, run_id: str, spool: Path, cut=None) -> str:
    """One run through `recorder`: created, epoch 0, `cut()` (the database goes away), the
    other epochs, finished. It must have ended up in `spool`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the recorder's warning names the spool: checked below
        recorder.call(Store.create_run, run_id=run_id, experiment="spooled", name=run_id[:8])
        recorder.call(Store.log_epoch, run_id, 0, {"loss": 1.0})
        if cut is not None:
            cut()
        for epoch in range(1, EPOCHS):
            recorder.call(Store.log_epoch, run_id, epoch, {"loss": 1.0 / (epoch + 1)})
        recorder.call(Store.finish_run, run_id, status="finished", stop_reason="completed")
        assert recorder.spooled_to == spool and recorder.pending == 0
    recorder.close()
    return run_id


def spool_while_locked(db_file: Path, spool: Path) -> str:
    """A run that reached the SQLite file `db_file`, then found it locked by another process."""
    store = open_store(f"sqlite:///{db_file}", busy_timeout=0.2)
    holder = sqlite3.connect(db_file, isolation_level=None)
    recorder = RunRecorder(None, store, spool_path=spool, retry_delays=(0.01,))
    try:
        return _record(recorder, uuid.uuid4().hex, spool, lambda: holder.execute("BEGIN EXCLUSIVE"))
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        store.close()


def spool_never_reached(url: str, spool: Path) -> str:
    """A run whose database refused the recorder from the start (its URL is all it knows)."""
    recorder = RunRecorder(url, spool_path=spool, retry_delays=(0.01,))
    return _record(recorder, uuid.uuid4().hex, spool)


def _wrong_password(url: str) -> str:
    assert f":{Cluster.PASSWORD}@" in url
    return url.replace(f":{Cluster.PASSWORD}@", ":not-the-password@")


def _localhost(url: str) -> str:
    assert "@127.0.0.1:" in url
    return url.replace("@127.0.0.1:", "@localhost:")


def _run_ids(url: str) -> set[str]:
    with open_store(url) as s:
        return set(s.run_ids())


def _epochs(url: str, run_id: str) -> list[int]:
    with open_store(url) as s:
        return [p.epoch for p in s.metric_history(run_id, ["loss"])]


def _no_password(*texts: str) -> None:
    for t in texts:
        assert Cluster.PASSWORD not in t and "not-the-password" not in t


# -- identity --------------------------------------------------------------------------------


def test_identity_is_the_same_whatever_url_reaches_the_database(tmp_path, monkeypatch, pg_url):
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///rel.db") as a, open_store(f"sqlite:///{tmp_path}/rel.db") as b:
        assert a.identity is not None and len(a.identity) == 32
        assert a.identity == b.identity
    with open_store("rel.db") as again, open_store(str(tmp_path / "other.db")) as other:
        assert again.identity == a.identity  # kept, not made anew on each open
        assert other.identity not in (None, a.identity)
    with open_store(pg_url) as p, open_store(_localhost(pg_url)) as q:
        assert p.identity == q.identity and p.identity not in (None, a.identity, other.identity)


# -- one database at a time ------------------------------------------------------------------


def test_sync_pushes_each_database_only_its_own_runs(tmp_path, pg_url):
    spool = tmp_path / "spool.db"
    a_url = f"sqlite:///{tmp_path}/a.db"
    a_runs = [spool_while_locked(tmp_path / "a.db", spool) for _ in range(2)]
    b_runs = [spool_never_reached(_wrong_password(pg_url), spool) for _ in range(3)]
    b_where = password_free(pg_url)
    with open_store(f"sqlite:///{spool}") as s:
        assert set(s.run_ids()) == {*a_runs, *b_runs}
        noted = s.destinations()
    with open_store(a_url) as a:
        assert {noted[r] and noted[r].database_id for r in a_runs} == {a.identity}
    assert {(noted[r].url, noted[r].database_id) for r in b_runs} == {(b_where, None)}  # type: ignore[union-attr]
    for f in tmp_path.glob("spool.db*"):  # the file and its WAL: no password anywhere
        assert b"not-the-password" not in f.read_bytes()

    first = run(a_url, "sync", str(spool))
    assert first.exit_code == 0, first.stderr
    synced, waiting = first.stdout.splitlines()
    assert synced == (
        f"synced {spool} into {a_url}: 0 new runs, 2 runs completed, "
        f"{2 * (EPOCHS - 1)} metric points, 0 checkpoints added"
    )
    assert waiting == (
        f"3 runs in the spool are meant for {b_where}; push them with: "
        f"tracker --db {shlex.quote(b_where)} sync {spool}"
    )
    assert all(_epochs(a_url, r) == list(range(EPOCHS)) for r in a_runs)
    assert _run_ids(pg_url) == set()  # the other database is left alone
    assert _run_ids(a_url) == set(a_runs)

    # The other database, spelled differently and with its password: its runs and no others.
    second = run(_localhost(pg_url), "sync", str(spool), "--prune")
    assert second.exit_code == 0, second.stderr
    synced, waiting = second.stdout.splitlines()
    assert "3 new runs" in synced and f"{3 * EPOCHS} metric points" in synced
    assert waiting.startswith(f"2 runs in the spool are meant for {a_url}; push them with: ")
    assert _run_ids(pg_url) == set(b_runs) and _run_ids(a_url) == set(a_runs)
    assert all(_epochs(pg_url, r) == list(range(EPOCHS)) for r in b_runs)
    assert _run_ids(f"sqlite:///{spool}") == set(a_runs)  # pruned: B's runs only
    _no_password(first.stdout, first.stderr, second.stdout, second.stderr)


def test_a_database_reached_once_is_known_by_identity_not_by_url(tmp_path, pg_server, monkeypatch):
    """The recorder reached the database as 127.0.0.1 before it went away: `--db localhost`
    syncs its runs; a database later made anew at the very same URL is not the one they were
    meant for, and `--all` says so."""
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    name = f"t_{uuid.uuid4().hex[:10]}"
    url = pg_server.rsplit("/", 1)[0] + f"/{name}"

    def sql(*statements: str) -> None:
        with admin.connect() as c:
            for s in statements:
                c.execute(text(s))

    def cut() -> None:
        sql(
            f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        )

    spool = tmp_path / "spool.db"
    sql(f'CREATE DATABASE "{name}"')
    try:
        store = open_store(url)
        recorder = RunRecorder(None, store, spool_path=spool, retry_delays=(0.01,))
        run_id = _record(recorder, uuid.uuid4().hex, spool, cut)
        store.close()
        sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        other = run(f"sqlite:///{tmp_path}/other.db", "sync", str(spool))
        assert (
            other.exit_code == 0
            and f"1 runs in the spool are meant for {password_free(url)}" in (other.stdout)
        )
        done = run(_localhost(url), "sync", str(spool))
        assert done.exit_code == 0 and "1 runs completed" in done.stdout, done.stdout
        assert len(done.stdout.splitlines()) == 1  # nothing waits for another database
        assert _epochs(url, run_id) == list(range(EPOCHS))

        sql(f'DROP DATABASE "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        given = f"sqlite:///{tmp_path}/given.db"
        monkeypatch.setenv("PGPASSWORD", Cluster.PASSWORD)  # libpq completes the stored URL
        again = run(given, "sync", str(spool), "--all")
        assert again.exit_code == 1
        assert again.stderr.startswith(f"could not reach {password_free(url)} (it now holds ")
        assert "1 runs stay in the spool" in again.stderr
        assert _run_ids(url) == set()  # the new database got nothing
        _no_password(other.stdout, done.stdout, again.stdout, again.stderr)
    finally:
        sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# -- --all ---------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRACKER, *args], capture_output=True, text=True, env=env, timeout=120, stdin=None
    )


def test_sync_all_pushes_each_run_where_credentials_allow(tmp_path, pg_url):
    spool = tmp_path / "spool.db"
    a_url = f"sqlite:///{tmp_path}/a.db"
    c_dir = tmp_path / "not-yet"  # a SQLite file whose folder is missing: never reached
    c_url = f"sqlite:///{c_dir}/c.db"
    a_runs = [spool_while_locked(tmp_path / "a.db", spool)]
    b_runs = [spool_never_reached(_wrong_password(pg_url), spool) for _ in range(2)]
    c_runs = [spool_never_reached(c_url, spool)]
    given = f"sqlite:///{tmp_path}/given.db"
    pgpass = tmp_path / "pgpass"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "TRACKER_DB_URL"}
    env.update(TRACKER_DB_URL=given, PGPASSFILE=str(tmp_path / "no-pgpass"))

    first = _cli("sync", str(spool), "--all", env=env)
    assert first.returncode == 1, first.stderr
    assert first.stdout.splitlines() == [
        f"synced {spool} into {given}: 0 new runs, 0 runs completed, 0 metric points, "
        "0 checkpoints added",
        f"synced {spool} into {a_url}: 0 new runs, 1 runs completed, {EPOCHS - 1} metric "
        "points, 0 checkpoints added",
    ]
    b_line, c_line = first.stderr.splitlines()
    b_where = password_free(pg_url)
    assert b_line.startswith(f"could not reach {b_where} (") and "password" in b_line
    assert b_line.endswith(
        f"2 runs stay in the spool; push them with: tracker --db {shlex.quote(b_where)} "
        f"sync {spool}"
    )
    assert c_line.startswith(f"could not reach {c_url} (") and "unable to open" in c_line
    assert _run_ids(a_url) == set(a_runs) and _run_ids(pg_url) == set()

    # The password in ~/.pgpass (libpq's own file), the folder made: everything goes, once.
    port = pg_url.split("@127.0.0.1:", 1)[1].split("/", 1)[0]
    pgpass.write_text(f"127.0.0.1:{port}:postgres:postgres:{Cluster.PASSWORD}\n")
    pgpass.chmod(0o600)
    c_dir.mkdir()
    env["PGPASSFILE"] = str(pgpass)
    second = _cli("sync", str(spool), "--all", "--prune", env=env)
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"synced {spool} into {where}" for where in (given, a_url, b_where, c_url)
    ]
    assert "2 new runs" in lines[2] and "1 new runs" in lines[3] and second.stderr == ""
    assert _run_ids(pg_url) == set(b_runs) and _run_ids(c_url) == set(c_runs)
    assert all(_epochs(pg_url, r) == list(range(EPOCHS)) for r in b_runs)
    assert _run_ids(given) == set() and _run_ids(f"sqlite:///{spool}") == set()
    _no_password(first.stdout, first.stderr, second.stdout, second.stderr)


def test_sync_all_takes_the_password_from_tracker_db_url(tmp_path, pg_url):
    spool = tmp_path / "spool.db"
    b_runs = [spool_never_reached(_wrong_password(pg_url), spool)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(TRACKER_DB_URL=_localhost(pg_url), PGPASSFILE=str(tmp_path / "no-pgpass"))
    given = f"sqlite:///{tmp_path}/given.db"
    done = _cli("--db", given, "sync", str(spool), "--all", env=env)
    assert done.returncode == 0, done.stderr
    assert "1 new runs" in done.stdout.splitlines()[1]
    assert _run_ids(pg_url) == set(b_runs) and _run_ids(given) == set()
    _no_password(done.stdout, done.stderr)


def test_sync_all_goes_past_a_given_database_it_cannot_reach(tmp_path, pg_url):
    """Runs spooled by the previous schema (no destination) wait for the given database; the
    others go to their own."""
    from tests.data.make_schema_db import RUNS, populate

    spool = tmp_path / "spool.db"
    populate(f"sqlite:///{spool}", "0002")
    a_url = f"sqlite:///{tmp_path}/a.db"
    a_runs = [spool_while_locked(tmp_path / "a.db", spool)]  # the recorder upgrades the spool
    bad = _wrong_password(pg_url)
    first = run(bad, "sync", str(spool), "--all")
    assert first.exit_code == 1
    assert first.stdout.startswith(f"synced {spool} into {a_url}: 0 new runs, 1 runs completed")
    (line,) = first.stderr.splitlines()
    where = password_free(pg_url)
    assert line.startswith(f"could not reach {where} (") and "password" in line
    assert line.endswith(
        f"2 runs stay in the spool; push them with: tracker --db {shlex.quote(where)} sync {spool}"
    )
    assert _run_ids(a_url) == set(a_runs) and _run_ids(pg_url) == set()

    second = run(pg_url, "sync", str(spool), "--all", "--prune")
    assert second.exit_code == 0, second.stderr
    assert "2 new runs" in second.stdout.splitlines()[0]
    assert _run_ids(pg_url) == {r[0] for r in RUNS} and _run_ids(f"sqlite:///{spool}") == set()
    _no_password(first.stdout, first.stderr, second.stdout, second.stderr)


def test_sync_all_reaches_a_database_named_by_a_service_file(tmp_path, pg_url, monkeypatch):
    """The run was meant for `postgresql:///?service=trk`, which did not resolve while it
    trained; once libpq's service file names it, `--all` takes the runs there."""
    from sqlalchemy.engine import make_url

    spool = tmp_path / "spool.db"
    services = tmp_path / "pg_service.conf"
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    service_url = "postgresql+psycopg:///?service=trk"
    b_runs = [spool_never_reached(service_url, spool)]
    given = f"sqlite:///{tmp_path}/given.db"
    first = run(given, "sync", str(spool), "--all")
    assert first.exit_code == 1 and first.stderr.startswith(f"could not reach {service_url} (")

    u = make_url(pg_url)
    services.write_text(
        f"[trk]\nhost={u.host}\nport={u.port}\nuser={u.username}\npassword={u.password}\n"
        f"dbname={u.database}\noptions={u.query['options']}\n"
    )
    second = run(given, "sync", str(spool), "--all")
    assert second.exit_code == 0, second.stderr
    assert second.stdout.splitlines()[1].startswith(f"synced {spool} into {service_url}: 1 new")
    assert _run_ids(pg_url) == set(b_runs)
    _no_password(first.stdout, first.stderr, second.stdout, second.stderr)


# -- older spools, bad input -----------------------------------------------------------------


def test_a_spool_of_the_previous_schema_syncs_into_the_given_database(db_url, tmp_path):
    from tests.data.make_schema_db import BATCHES, HISTORY, RUNS, populate

    spool = tmp_path / "old-spool.db"
    populate(f"sqlite:///{spool}", "0002")  # written by the tracker before destinations
    points = sum(len(v) for keys in HISTORY.values() for v in keys.values()) + len(BATCHES)
    result = run(db_url, "sync", str(spool))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"synced {spool} into {mask_url(resolve_url(db_url))}: {len(RUNS)} new runs, "
        f"0 runs completed, {points} metric points, 1 checkpoints added"
    ]
    assert _run_ids(db_url) == {r[0] for r in RUNS}
    with open_store(db_url) as s:
        assert s.best_runs("val_loss")[0].run.name == "old-best"


def test_sync_of_a_missing_spool_with_all_is_a_clean_error(tmp_path):
    result = run(f"sqlite:///{tmp_path}/t.db", "sync", str(tmp_path / "nope.db"), "--all")
    assert result.exit_code == 1 and result.stderr.startswith("Error: no spool file at")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# -- killed half-way -------------------------------------------------------------------------

RUNS_IN_SPOOL = 300
POINTS_PER_RUN = 40 * 3


def _big_spool(spool: Path, target: Store) -> list[str]:
    """`RUNS_IN_SPOOL` finished runs meant for `target`, as the recorder notes them."""
    with open_store(f"sqlite:///{spool}") as s:
        template = s.export_run(
            seed_run(s, {k: [1.0 / (e + 1) for e in range(40)] for k in ("loss", "acc", "mae")})
        )
        s.delete_runs(s.run_ids())
        bundles = []
        for i in range(RUNS_IN_SPOOL):
            run_id = uuid.uuid4().hex
            bundles.append(replace(template, run=replace(template.run, id=run_id, name=f"r{i}")))
        s.import_runs(bundles)
        for b in bundles:
            s.set_destination(b.run.id, url=target.url, database_id=target.identity)
        return [b.run.id for b in bundles]


def _counts(url: str) -> tuple[int, dict[str, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            n = c.execute(select(func.count()).select_from(runs)).scalar_one()
            q = select(metrics.c.run_id, func.count()).group_by(metrics.c.run_id)
            return n, {r: k for r, k in c.execute(q)}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_sync_killed_half_way_completes_when_run_again(db_url, tmp_path):
    spool = tmp_path / "spool.db"
    with open_store(db_url) as target:
        ids = _big_spool(spool, target)
    env = dict(os.environ)
    proc = subprocess.Popen(
        [TRACKER, "--db", db_url, "sync", str(spool), "--prune"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 120
    while _counts(db_url)[0] < 5:  # progress shows in the database: kill it there
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    landed, points = _counts(db_url)
    left = _run_ids(f"sqlite:///{spool}")
    assert 5 <= landed < RUNS_IN_SPOOL, "the sync ended before it could be killed"
    assert set(ids) - left <= set(points)  # pruned only once committed in the database
    assert set(points.values()) == {POINTS_PER_RUN}  # each run landed whole or not at all

    again = subprocess.run(
        [TRACKER, "--db", db_url, "sync", str(spool), "--prune"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    landed, points = _counts(db_url)
    assert landed == RUNS_IN_SPOOL and set(points) == set(ids)
    assert set(points.values()) == {POINTS_PER_RUN}  # no point twice
    assert _run_ids(f"sqlite:///{spool}") == set()


def test_sync_all_finishes_the_uploads_a_spooled_run_left_pending(tmp_path):
    """A run spooled with a checkpoint upload still pending (its process was killed): `--all`
    pushes it into its own database, then finishes the upload from the file still here."""
    from tracker.checkpoint_files import file_digest

    spool, a_db, folder = tmp_path / "spool.db", tmp_path / "a.db", tmp_path / "artifacts"
    run_id = spool_while_locked(a_db, spool)
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(os.urandom(4096))
    size, sha = file_digest(weights)
    with open_store(f"sqlite:///{spool}") as s:
        s.add_checkpoint(
            run_id,
            path=str(weights),
            kind="weights",
            source="ModelCheckpoint",
            size=size,
            sha256=sha,
            epoch=EPOCHS - 1,
            artifact_root=str(folder),
            artifact_key=f"{run_id}/{sha}/w.weights.h5",
        )

    done = run(f"sqlite:///{tmp_path}/given.db", "sync", str(spool), "--all")
    assert done.exit_code == 0, done.stderr
    a_line, finished = done.stdout.splitlines()[1:]
    assert a_line.startswith(f"synced {spool} into sqlite:///{a_db}: ")
    assert "1 checkpoints added" in a_line
    assert finished == "finished 1 pending checkpoint upload(s)"
    with open_store(f"sqlite:///{a_db}") as s:
        (ck,) = s.checkpoints(run_id)
        assert s.pending_uploads() == []
    assert ck.uploaded_at is not None
    assert file_digest(folder / ck.artifact_key) == (size, sha)


def test_the_command_the_spool_warning_names_pushes_the_run_home(tmp_path):
    """Run from another folder, with no database configured, the command the warning gives
    still takes the run to the database it was meant for."""
    target_dir = tmp_path / "away"
    target = f"sqlite:///{target_dir}/team.db"
    spool = tmp_path / "spool dir" / "spool.db"
    recorder = RunRecorder(target, spool_path=spool, retry_delays=(0.01,))
    run_id = uuid.uuid4().hex
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recorder.call(Store.create_run, run_id=run_id, experiment="spooled", name="away")
        for epoch in range(EPOCHS):
            recorder.call(Store.log_epoch, run_id, epoch, {"loss": 1.0 / (epoch + 1)})
        recorder.call(Store.finish_run, run_id, status="finished", stop_reason="completed")
        assert recorder.spooled_to == spool and recorder.pending == 0
    recorder.close()
    (said,) = [str(w.message) for w in caught if "spool file" in str(w.message)]
    command = said.rsplit("with: ", 1)[1]
    target_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    argv = shlex.split(command)
    assert argv[0] == "tracker"
    done = subprocess.run(
        [TRACKER, *argv[1:]], capture_output=True, text=True, env=env, cwd=elsewhere, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert _run_ids(target) == {run_id}
    assert _epochs(target, run_id) == list(range(EPOCHS))
