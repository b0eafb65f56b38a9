"""`tracker sync`: spooled runs reach the database once, whatever is run twice."""

from __future__ import annotations

from tracker import open_store

from .cli_support import fails, ok_json, run
from .helpers import seed_run


def test_sync_pushes_spooled_runs_once(db_url, tmp_path):
    spool = tmp_path / "spool.db"
    with open_store(f"sqlite:///{spool}") as s:
        done = seed_run(s, {"val_loss": [0.5, 0.2]}, name="spooled")
        half = seed_run(s, {"val_loss": [0.9]}, name="half", finish=None)
    first = run(db_url, "sync", str(spool))
    assert first.exit_code == 0, first.stderr
    assert "2 new runs" in first.stdout and "3 metric points" in first.stdout
    again = run(db_url, "sync", str(spool), "--prune")
    assert (
        again.exit_code == 0 and "0 new runs" in again.stdout and "0 metric points" in again.stdout
    )
    best = ok_json(db_url, "best", "--metric", "val_loss")
    assert (best["run_id"], best["epoch"], best["value"]) == (done, 1, 0.2)
    shown = ok_json(db_url, "runs", "show", half)
    assert shown["status"] == "running" and len(shown["epochs"]) == 1
    with open_store(f"sqlite:///{spool}") as s:
        assert s.run_ids() == []  # pruned after the second sync


def test_sync_reads_the_default_spool_from_env(db_url, tmp_path, monkeypatch):
    spool = tmp_path / "env-spool.db"
    with open_store(f"sqlite:///{spool}") as s:
        seed_run(s, {"loss": [1.0]})
    monkeypatch.setenv("TRACKER_SPOOL", str(spool))
    assert "1 new runs" in run(db_url, "sync").stdout


def test_sync_without_a_spool_file_is_a_clean_error(db_url, tmp_path):
    err = fails(db_url, "sync", str(tmp_path / "nope.db"))
    assert "no spool file" in err
