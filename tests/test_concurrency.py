"""Several processes writing one database at once lose nothing and see no lock errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from tracker import open_store

WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from tracker import open_store
    from tracker.records import MetricPoint

    url, name, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = open_store(url)
    run = store.create_run(experiment="load", name=name, epochs_planned=epochs)
    for epoch in range(epochs):
        store.log_epoch(run.id, epoch, {f"m{k}": epoch + k / 10 for k in range(5)})
        now = datetime.now(timezone.utc)
        store.log_batch_metrics(run.id, [MetricPoint("loss", epoch, b, 1.0, now)
                                         for b in range(10)])
    store.finish_run(run.id, status="finished", stop_reason="completed")
    print(run.id)
    """
)


@pytest.mark.slow
def test_parallel_writers_lose_nothing(db_url):
    """Four processes start on an empty database (migration race included) and write at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, db_url, f"w{i}", "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err
    with open_store(db_url) as s:
        runs = s.list_runs(experiment="load")
        assert len(runs) == 4
        for r in runs:
            assert r.run.status == "finished" and r.run.epochs_done == 40
            assert len(s.metric_history(r.run.id)) == 40 * 5
            assert len(s.metric_history(r.run.id, batches=True)) == 40 * 10
            assert s.summaries(r.run.id)["m4"].max_value == pytest.approx(39.4)


def test_a_store_opened_while_another_process_writes_a_new_file_waits_for_it(tmp_path):
    """Opening a store puts its SQLite file in WAL mode, which needs the file to itself; SQLite
    refuses that at once while another connection writes, whatever the busy timeout (four
    processes starting on a new database met it). The open waits for the write instead."""
    db = tmp_path / "tracker.db"
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE other (x)")  # a file in the default (rollback) journal mode
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO other VALUES (1)")
    commit = threading.Timer(0.5, other.execute, ["COMMIT"])
    commit.start()
    try:
        with open_store(f"sqlite:///{db}") as store:
            run = store.create_run(experiment="after")
            assert store.get_run(run.id).experiment == "after"
    finally:
        commit.join()
    other.close()
    after = sqlite3.connect(db)
    assert after.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert after.execute("SELECT x FROM other").fetchall() == [(1,)]  # its write kept
    after.close()
