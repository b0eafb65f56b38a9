"""The benchmarks (bench/run.py) run at the tiny size. No timing is asserted here: the figures
live in bench/RESULTS.md, measured by a full run, and MLflow is not needed (--skip-mlflow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# epoch_write and fit_overhead drive the Keras callback: they need Keras, as its tests do.
BENCHMARKS = [
    pytest.param("epoch_write", marks=pytest.mark.keras),
    pytest.param("fit_overhead", marks=pytest.mark.keras),
    "ingest",
    "queries",
    "growth",
    "ui_api",
]

pytestmark = pytest.mark.slow


def run_bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--size", "tiny", "--skip-mlflow", "--out", str(out)]
        + list(args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "latest.json").read_text())


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_at_tiny_size(tmp_path, name):
    results = run_bench(tmp_path, "--only", name)

    assert list(results["benchmarks"]) == [name]
    result = results["benchmarks"][name]["sqlite"]
    assert "mlflow" not in result
    assert len(result["loadavg"]["before"]) == 3
    assert results["machine"]["cores"] >= 1
    report = subprocess.run(
        [sys.executable, "bench/report.py", str(tmp_path / "results" / "latest.json")]
        + ["-o", str(tmp_path / "RESULTS.md")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "# Benchmarks" in (tmp_path / "RESULTS.md").read_text()


@pytest.mark.keras  # epoch_write among them
def test_benchmarks_run_on_postgresql(tmp_path, pg_server):
    # pg_server proves (or skips) that the machine can start a cluster; run.py starts its own.
    results = run_bench(tmp_path, "--postgres", "--only", "epoch_write,ingest,queries")

    for name in ("epoch_write", "ingest", "queries"):
        assert set(results["benchmarks"][name]) == {"sqlite", "postgresql"}
    assert results["machine"]["postgresql"]


@pytest.mark.keras  # fit_latency runs real fits
def test_remote_db_runs_behind_the_proxy_on_postgresql_only(tmp_path, pg_server):
    skipped = run_bench(tmp_path / "sqlite", "--only", "remote_db")
    assert skipped["benchmarks"] == {}  # PostgreSQL only: nothing without --postgres

    results = run_bench(tmp_path, "--postgres", "--only", "remote_db")
    (only,) = results["benchmarks"]["remote_db"].values()
    size = results["size"]
    assert [float(d) for d in only["delays"]] == size["latency_delays_ms"]
    # the server and its link on a core of their own, the fits on the others
    cores = os.sched_getaffinity(0)
    training, elsewhere = set(only["cpus"]["training"]), set(only["cpus"]["server_and_link"])
    if len(cores) > 1:
        assert training and elsewhere and not training & elsewhere
        assert training | elsewhere == cores
    for d in only["delays"].values():
        tracked = d["tracker"]["tracker_epoch"]
        assert set(d["tracker"]["fit_cpus"]) == (training if len(cores) > 1 else cores)
        # every epoch of every timed fit was seen ending, and the run was never spooled
        assert tracked["epoch_ends"] == size["latency_reps"] * size["fit_epochs"]
        assert tracked["train_end_s"] > 0 and d["tracker"]["none"]["seconds"]["n"] >= 1
        trips = d["tracker"]["round_trips"]  # counted by the proxy: the fits went through it
        assert trips["fits"] == 1 + size["latency_reps"] and trips["total"] >= trips["fits"]
        # the first fit of more than one process; the median within its interval
        assert d["tracker"]["first_fit"]["processes"] == size["first_fit_procs"] > 1
        low, high = tracked["overhead_interval"]
        assert low <= tracked["overhead"] <= high
        # the writer thread's CPU was counted, and the empty callback ran beside the tracker
        assert tracked["thread_cpu_s"] > 0 and "empty_callback" in d["tracker"]
        assert d["tracker"]["cold_fit"]["processes"] == size["first_fit_procs"]
    out = tmp_path / "RESULTS.md"
    report = subprocess.run(
        [sys.executable, "bench/report.py", str(tmp_path / "results" / "latest.json")]
        + ["-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "## 7. A database on another machine" in out.read_text()


def _ui_pages(ours: float, theirs: float, store: str) -> dict:
    def page(s: float) -> dict:
        return {"shown_s": s, "fcp_s": s / 2, "load_s": s / 2}

    return {
        "runs": 50_000,
        "batch_points": 1_000_000,
        "run_page_shown": 3000,
        "run_page_ready_s": 1.5,
        "runs_page": page(ours),
        "mlflow": {"runs": 50_000, "store": store, "runs_page": page(theirs)},
        "loadavg": {"before": [1.0, 1.0, 1.0], "after": [2.0, 2.0, 2.0]},
    }


def test_report_gives_both_uis_on_each_database():
    sys.path.insert(0, str(ROOT / "bench"))
    import report

    b = {
        "ui_pages": {
            "sqlite": _ui_pages(0.4, 4.4, "sqlite"),
            "postgresql": _ui_pages(0.5, 5.0, "postgresql+psycopg"),
        }
    }
    section = "\n".join(report.web_ui({"benchmarks": b}))
    targets = "\n".join(report._targets_ui(b))

    assert "| tracker runs page | postgresql | 0.50 s | 0.25 s | 0.25 s |" in section
    assert "| MLflow UI runs page (50,000 runs) | postgresql | 5.00 s |" in section
    assert "| MLflow UI runs page (50,000 runs) | sqlite | 4.40 s |" in section
    assert "`postgresql+psycopg`" in section and "not measured" not in section
    assert "(postgresql) | 0.50 s | 5.00 s (50,000 runs) | 10.0× | ≤ 1 s | **met** |" in targets

    del b["ui_pages"]["postgresql"]  # a run without --postgres says so
    assert "MLflow's UI on PostgreSQL was not measured" in "\n".join(
        report.web_ui({"benchmarks": b})
    )
