"""The store the callback's recorder shares across the `fit`s of one process."""

from __future__ import annotations

import functools
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
import warnings

import pytest

from tracker import Store, open_store
from tracker.errors import RunNotFound
from tracker.store.spool import sync
from tracker.training.recorder import RunRecorder, shared_store

from .latency import behind_proxy


def _run(recorder: RunRecorder) -> str:
    run_id = uuid.uuid4().hex
    recorder.call(Store.create_run, run_id=run_id, experiment="shared")
    recorder.call(Store.log_epoch, run_id, 0, {"loss": 1.0})
    recorder.call(Store.finish_run, run_id, status="finished", stop_reason="completed")
    return run_id


def test_recorders_of_one_process_share_the_store(db_url, tmp_path):
    first = RunRecorder(db_url, spool_path=tmp_path / "spool.db")
    a = _run(first)
    store = first._target()
    first.close()  # the end of one `fit` does not close what the next one uses
    second = RunRecorder(db_url, spool_path=tmp_path / "spool.db")
    b = _run(second)
    assert second._target() is store
    second.close()
    with open_store(db_url) as s:
        assert [s.get_run(r).epochs_done for r in (a, b)] == [1, 1]


def test_a_replaced_sqlite_file_is_opened_afresh(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    old = shared_store(url)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"t.db{suffix}").unlink(missing_ok=True)
    recorder = RunRecorder(url, spool_path=tmp_path / "spool.db")
    run_id = _run(recorder)  # a stale engine would write into the deleted file
    assert recorder._target() is not old
    assert recorder.spooled_to is None
    with open_store(url) as s:
        assert s.get_run(run_id).status == "finished"


def test_a_failed_store_is_no_longer_shared(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    store = shared_store(url)
    recorder = RunRecorder(url, spool_path=tmp_path / "spool.db")
    with pytest.warns(RuntimeWarning, match="dropped one write"):
        recorder.call(Store.log_epoch, "no-such-run", 0, {"loss": 1.0})
    assert recorder._target() is store  # this recorder goes on with it
    assert shared_store(url) is not store  # the next `fit` opens the database again
    recorder.close()


def test_a_relative_sqlite_path_is_not_shared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = shared_store("sqlite:///rel.db")
    second = shared_store("sqlite:///rel.db")
    assert first is not second
    first.close()
    second.close()


FORK = textwrap.dedent(
    """
    import os, sys, uuid
    from tracker import Store
    from tracker.training.recorder import RunRecorder, shared_store

    url = sys.argv[1]

    def run(tag):
        recorder = RunRecorder(url)
        run_id = uuid.uuid4().hex
        recorder.call(Store.create_run, run_id=run_id, experiment=tag)
        recorder.call(Store.log_epoch, run_id, 0, {"loss": 1.0})
        recorder.call(Store.finish_run, run_id, status="finished", stop_reason="completed")
        assert recorder.pending == 0
        return recorder._target()

    parent = run("parent")
    pid = os.fork()
    if pid == 0:
        child = run("child")
        # A new engine of its own, and a normal exit (the parent's connections are not closed).
        sys.exit(0 if child is not parent and shared_store(url) is child else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert run("parent-again") is parent  # the parent's engine still works after the child
    print("OK")
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
def test_a_forked_child_does_not_use_the_parents_engine(db_url):
    proc = subprocess.run(
        [sys.executable, "-c", FORK, db_url], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    with open_store(db_url) as s:
        ranked = s.list_runs()
    assert sorted(r.run.experiment for r in ranked) == ["child", "parent", "parent-again"]
    assert all(r.run.status == "finished" for r in ranked)


# -- the writer thread: epoch writes leave the training thread -----------------------------------


def _epochs(url: str, run_id: str) -> list[tuple[int, float]]:
    with open_store(url) as s:
        return [(p.epoch, p.value) for p in s.metric_history(run_id, ["loss"])]


def test_handed_writes_land_in_order_and_at_most_one_epoch_is_in_flight(db_url, tmp_path):
    losses = [1.0 / (e + 1) for e in range(12)]
    with behind_proxy(db_url, 0.005) as (url, _):
        recorder = RunRecorder(url, spool_path=tmp_path / "spool.db")
        run_id = uuid.uuid4().hex
        recorder.call(Store.create_run, run_id=run_id, experiment="writer")
        for e, loss in enumerate(losses):
            recorder.wait()  # what the session does at every epoch end
            # Backpressure: every epoch handed over before this one is in the database now.
            assert _epochs(db_url, run_id) == list(enumerate(losses[:e]))
            recorder.submit(Store.log_epoch, run_id, e, {"loss": loss})
        recorder.call(Store.finish_run, run_id, status="finished", stop_reason="completed")
        # The run's end is written after everything handed over before it, and waits for it.
        assert _epochs(db_url, run_id) == list(enumerate(losses))
        with open_store(db_url) as s:
            run = s.get_run(run_id)
        assert (run.status, run.epochs_done) == ("finished", len(losses))
        assert recorder.pending == 0 and recorder.spooled_to is None
        recorder.close()


def test_writes_handed_over_while_held_are_written_when_it_ends_in_order(db_url, tmp_path):
    """`on_train_begin` hands the run's creation over first and holds it: the writer thread,
    whose first work opens the store, starts when the hook's own work is done. A write that
    must be applied at once (`call`) is applied after what was held, not stuck behind it."""
    recorder = RunRecorder(db_url, spool_path=tmp_path / "spool.db")
    run_id = uuid.uuid4().hex
    with recorder.held():
        recorder.submit(Store.create_run, run_id=run_id, experiment="held")
        recorder.submit(Store.log_epoch, run_id, 0, {"loss": 1.0})
        time.sleep(0.2)  # ample for a writer thread to write both, were one started
        assert recorder.pending == 2
        with open_store(db_url) as s, pytest.raises(RunNotFound):
            s.get_run(run_id)
    recorder.wait()
    assert recorder.pending == 0 and _epochs(db_url, run_id) == [(0, 1.0)]

    with recorder.held():
        recorder.submit(Store.log_epoch, run_id, 1, {"loss": 0.5})
        recorder.call(Store.finish_run, run_id, status="finished", stop_reason="completed")
    assert _epochs(db_url, run_id) == [(0, 1.0), (1, 0.5)]
    with open_store(db_url) as s:
        assert s.get_run(run_id).status == "finished"
    recorder.close()


def test_a_failed_write_on_the_writer_warns_and_later_writes_still_land(db_url, tmp_path):
    recorder = RunRecorder(db_url, spool_path=tmp_path / "spool.db")
    run_id = uuid.uuid4().hex
    recorder.call(Store.create_run, run_id=run_id, experiment="writer")
    with pytest.warns(RuntimeWarning, match="dropped one write"):
        recorder.submit(Store.log_epoch, "no-such-run", 0, {"loss": 1.0})
        recorder.wait()
    recorder.submit(Store.log_epoch, run_id, 0, {"loss": 0.5})
    recorder.call(Store.finish_run, run_id, status="finished", stop_reason="completed")
    assert _epochs(db_url, run_id) == [(0, 0.5)]
    recorder.close()


def test_the_database_going_away_with_a_write_in_flight_spools_everything_in_order(
    db_url, tmp_path
):
    """PostgreSQL: the link to it goes down; SQLite: another process holds the write lock."""
    spool = tmp_path / "spool.db"
    losses = [1.0 / (e + 1) for e in range(8)]
    with behind_proxy(db_url, 0.005) as (url, proxy):
        store = open_store(url, busy_timeout=0.2)
        holder = None
        recorder = RunRecorder(url, store, spool_path=spool, retry_delays=(0.05, 0.1))
        run_id = uuid.uuid4().hex
        recorder.call(Store.create_run, run_id=run_id, experiment="away")
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            for e, loss in enumerate(losses):
                recorder.wait()
                recorder.submit(Store.log_epoch, run_id, e, {"loss": loss})
                if e == 3:  # epoch 3 is in flight, or about to be
                    if proxy is not None:
                        proxy.stop()
                    else:
                        holder = sqlite3.connect(tmp_path / "tracker.db", isolation_level=None)
                        holder.execute("BEGIN EXCLUSIVE")
            recorder.call(Store.finish_run, run_id, status="finished", stop_reason="completed")
        ours = [str(w.message) for w in record if str(w.message).startswith("tracker")]
        assert len(ours) == 1 and str(spool) in ours[0], ours
        assert recorder.spooled_to == spool and recorder.pending == 0
        recorder.close()
        store.close()
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
    before = _epochs(db_url, run_id)
    assert before == list(enumerate(losses[: len(before)])) and len(before) <= 4
    with open_store(db_url) as target:
        sync(spool, target)
        run = target.get_run(run_id)
    assert (run.status, run.epochs_done) == ("finished", len(losses))
    assert _epochs(db_url, run_id) == list(enumerate(losses))


FORK_IN_FLIGHT = textwrap.dedent(
    """
    import os, sys, uuid
    from tracker import Store
    from tracker.training.recorder import RunRecorder

    recorder = RunRecorder(sys.argv[1])
    parent = uuid.uuid4().hex
    recorder.call(Store.create_run, run_id=parent, experiment="parent")
    for e in range(40):  # handed over without waiting: many are in flight at the fork
        recorder.submit(Store.log_epoch, parent, e, {"loss": float(e)})
    pid = os.fork()
    if pid == 0:
        # The child's recorder is usable (no lock the parent's writer held) and repeats none of
        # the parent's writes.
        child = uuid.uuid4().hex
        recorder.call(Store.create_run, run_id=child, experiment="child")
        recorder.submit(Store.log_epoch, child, 0, {"loss": 7.0})
        recorder.call(Store.finish_run, child, status="finished", stop_reason="completed")
        os._exit(0 if recorder.pending == 0 else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    recorder.call(Store.finish_run, parent, status="finished", stop_reason="completed")
    print("OK", parent)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
def test_a_fork_with_writes_in_flight_neither_blocks_nor_repeats_them(db_url):
    proc = subprocess.run(
        [sys.executable, "-c", FORK_IN_FLIGHT, db_url], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    parent = proc.stdout.split()[-1]
    with open_store(db_url) as s:
        ranked = {r.run.experiment: r.run for r in s.list_runs()}
        assert [p.value for p in s.metric_history(parent, ["loss"])] == [
            float(e) for e in range(40)
        ]
        assert [p.value for p in s.metric_history(ranked["child"].id, ["loss"])] == [7.0]
    assert ranked["parent"].epochs_done == 40 and ranked["child"].status == "finished"


# -- round trips to a distant database -----------------------------------------------------------


def test_each_write_of_a_run_is_one_round_trip_to_a_distant_database(pg_url, tmp_path):
    """Counted by the proxy, not timed: the run's creation, each epoch, a heartbeat and the
    run's end (with its last epoch) each wait for one round trip to PostgreSQL, however many
    statements they hold (BEGIN, updates, inserts of many rows, COMMIT: pipelined), and the
    recorder's connection is not pinged before each of them."""
    from tracker.training.session import RunSession

    planned = 5
    with behind_proxy(pg_url, 0.05) as (url, proxy):
        shared_store(url)  # connecting and checking the schema are not counted
        recorder = RunRecorder(url, spool_path=tmp_path / "spool.db")
        session = RunSession(recorder, uuid.uuid4().hex, heartbeat_interval=30.0)

        def trips(step) -> int:
            before = proxy.round_trips
            step()
            recorder.wait()
            return proxy.round_trips - before

        params = {f"p{i}": i for i in range(20)}
        create = {"experiment": "trips", "params": params, "tags": {"t": "x"}}
        assert trips(lambda: session.start({**create, "epochs_planned": planned})) == 1
        for epoch in range(planned):
            session.epoch_begin(epoch, {})
            logs = {"loss": 1.0 / (epoch + 1), **{f"m{i}": float(i) for i in range(30)}}
            # The last epoch waits for the run's end, to be written with it.
            end = functools.partial(session.epoch_end, epoch, logs)
            assert trips(end) == (epoch < planned - 1)
        assert trips(lambda: recorder.call(Store.heartbeat, session.run_id, 30.0)) == 1
        assert trips(lambda: session.finish("finished", "completed", {"epoch": 4})) == 1
        recorder.close()
    with open_store(pg_url) as s:
        run = s.get_run(session.run_id)
        assert (run.status, run.epochs_done, run.last_epoch) == ("finished", planned, 4)
        assert run.params == params and run.tags == {"t": "x"}
        losses = [(p.epoch, p.value) for p in s.metric_history(run.id, ["loss"])]
    assert losses == [(e, 1.0 / (e + 1)) for e in range(planned)]


def test_an_epochs_end_does_not_wait_for_a_heartbeat(tmp_path):
    """A beat handed over after the last epoch holds no epoch's end up (it is no epoch: what a
    `kill -9` can lose stays the epoch being written); every other write still is waited for."""
    db = tmp_path / "tracker.db"
    recorder = RunRecorder(f"sqlite:///{db}", spool_path=tmp_path / "spool.db")
    run_id = uuid.uuid4().hex
    recorder.call(Store.create_run, run_id=run_id, experiment="beat")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the beat's write waits for this lock
    try:
        recorder.submit(Store.heartbeat, run_id, 30.0)
        recorder.wait(beats=False)
        assert recorder.pending == 1  # returned with the beat not written yet
        recorder.submit(Store.log_epoch, run_id, 0, {"loss": 1.0})
        assert recorder.pending == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    recorder.wait(beats=False)  # the epoch after the beat is waited for
    assert recorder.pending == 0
    with open_store(f"sqlite:///{db}") as s:
        run = s.get_run(run_id)
    assert run.epochs_done == 1
    recorder.close()


def test_sqlalchemys_first_look_at_a_server_is_one_round_trip(pg_url):
    """A new engine's first connection asks the server a few settings before anything else,
    each a round trip through a distant link (and a BEGIN and a ROLLBACK more when asked in a
    transaction). Ours asks the two that connecting did not already tell the driver in one
    statement, outside a transaction, and learns what SQLAlchemy's own dialect learns; the
    connection is handed out in the driver's ordinary (transactional) mode all the same."""
    from sqlalchemy import create_engine, event

    from tracker.store.db import make_engine

    def learned(engine):
        d = engine.dialect
        seen = (d.server_version_info, d.default_schema_name, d.default_isolation_level)
        return (*seen, d._backslash_escapes, d.supports_identity_columns)

    stock = create_engine(pg_url)
    with stock.connect():
        expected = learned(stock)
    stock.dispose()
    with behind_proxy(pg_url, 0.0) as (url, proxy):
        engine = make_engine(url, pre_ping=False)
        connected: list[int] = []
        event.listen(engine, "connect", lambda *_: connected.append(proxy.round_trips), insert=True)
        with engine.connect() as conn:
            first_look = proxy.round_trips - connected[0]
            assert conn.connection.dbapi_connection.autocommit is False
            conn.exec_driver_sql("CREATE TEMPORARY TABLE t (x int)")
            conn.rollback()  # a transaction: the table is gone with it
            assert conn.exec_driver_sql("SELECT to_regclass('pg_temp.t')").scalar() is None
        assert learned(engine) == expected
        engine.dispose()
    assert stock.dialect.name == engine.dialect.name == "postgresql"
    assert first_look == 1


def test_opening_a_store_at_the_head_revision_is_one_query_after_connecting(pg_url):
    """A process's first write through a distant link opens the store: beyond what connecting
    costs any engine of ours (the driver's handshake, SQLAlchemy's first look at the server),
    checking the schema and reading the database's identity take one round trip."""
    from tracker.store.db import make_engine

    open_store(pg_url).close()  # the schema exists: a shared database has it
    with behind_proxy(pg_url, 0.0) as (url, proxy):
        before = proxy.round_trips
        engine = make_engine(url, pre_ping=False)
        with engine.connect():
            pass
        connecting = proxy.round_trips - before
        before = proxy.round_trips
        store = open_store(url, pre_ping=False)
        opening = proxy.round_trips - before
        assert store.identity is not None
        store.close()
        engine.dispose()  # after: its goodbye crosses the proxy too
    assert opening == connecting + 1
