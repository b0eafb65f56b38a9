"""The web UI's pages in headless Chromium on the store of bench/ui_api.py (50,000 runs with their
summaries and params, plus a run with 1,000,000 batch points of `loss`): the runs page's first
render (issue 13's target: <= 1 s) and the big run's page with its batch series drawn; next to
it, the MLflow UI's runs page on an MLflow store holding the same runs (`ui_pages` of
bench/run.py, on SQLite and, with --postgres, on PostgreSQL: MLflow's store then in its own
database of the same cluster; MLflow from bench/.venv-mlflow).

Read from the browser's own timeline (Navigation and Paint Timing): first contentful paint and
the load event of the runs page; for the run page, navigation to `#charts[data-state=ready]`
(the series fetched, downsampled by the server and drawn). For both UIs, "table shown": from
navigation until the newest run's name is on screen (MLflow's page is drawn by JavaScript from
its REST API, ours is HTML from the server). Median of --repeat fresh pages.

Usage: .venv/bin/python bench/ui_pages.py [--runs 50000] [--repeat 5] [--mlflow]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from ui_api import build, settle  # noqa: E402

from tests.ui_browser import CHROMIUM, Server  # noqa: E402
from tracker import open_store  # noqa: E402
from tracker.ui.app import create_app, open_read_only  # noqa: E402

# The flags a benchmark browser needs here (no sandbox as root, nothing in the background).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

TIMING = """() => new Promise((done) => {
  const nav = performance.getEntriesByType("navigation")[0];
  new PerformanceObserver((list, obs) => {
    const fcp = list.getEntries().find((p) => p.name === "first-contentful-paint");
    if (!fcp) return;
    obs.disconnect();
    done({fcp: fcp.startTime, load: nav.loadEventEnd, response: nav.responseEnd});
  }).observe({type: "paint", buffered: true});
})"""


def launch(pw: Any) -> Any:
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)


def table_shown(page: Any, url: str, name: str, timeout_ms: float = 120_000) -> dict[str, float]:
    """Open `url` in `page`; seconds from navigation until the text `name` is visible, with
    the page's first contentful paint."""
    t = time.perf_counter()
    page.goto(url)
    page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=timeout_ms)
    shown = time.perf_counter() - t
    timing = page.evaluate(TIMING)
    return {"shown_s": shown, "fcp_s": timing["fcp"] / 1000, "load_s": timing["load"] / 1000}


def medians(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def measure_tracker(url: str, n_runs: int, repeat: int, epochs: int, steps: int) -> dict[str, Any]:
    t = time.perf_counter()
    with open_store(url) as store:
        build(store, n_runs, epochs, steps)
        big = store.get_run("million").id
        for e in range(epochs):  # its epochs too: the page lists the keys from the summaries
            store.log_epoch(big, e, {"loss": 1 / (1 + e)})
        settle(store)  # build's VACUUM ANALYZE (PostgreSQL) again, these epochs included
    out: dict[str, Any] = {"runs": n_runs, "batch_points": epochs * steps}
    out["build_s"] = time.perf_counter() - t
    newest = f"bench-{n_runs - 1:06d}"  # the "million" run is newer: it is the first row
    from playwright.sync_api import sync_playwright

    runs, run_page = [], []
    with (
        open_read_only(url) as store,
        Server(create_app(store)) as server,
        sync_playwright() as pw,
    ):
        browser = launch(pw)
        for _ in range(repeat):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            runs.append(table_shown(page, server.base + "/", newest))
            t = time.perf_counter()
            page.goto(f"{server.base}/runs/{big}?batches=1")
            page.wait_for_function(
                "() => document.querySelector('#charts')?.dataset.state === 'ready'",
                timeout=60_000,
            )
            run_page.append(time.perf_counter() - t)
            out["run_page_shown"] = page.evaluate("window.trackerCharts[0].shown")
            page.close()
        browser.close()
    out["runs_page"] = medians(runs)
    out["run_page_ready_s"] = statistics.median(run_page)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure_mlflow(
    mlflow: Any, workdir: Path, n_runs: int, repeat: int, uri: str | None = None
) -> dict[str, Any]:
    """MLflow's own server and UI (`mlflow server`) on a store of the same runs at `uri` (an
    empty database; a SQLite file in `workdir` by default), made by mlflow_driver.py's
    `ui_store` (which VACUUM ANALYZEs it on PostgreSQL, as `ui_api.settle` does ours); its runs
    page opened as a user opens it."""
    uri = uri or f"sqlite:///{workdir}/mlflow-ui.db"
    made = mlflow.call("ui_store", cwd=workdir, uri=uri, runs=n_runs)
    port = _free_port()
    cli = mlflow.path / "bin" / "mlflow"
    cmd = [str(cli), "server", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1"]
    cmd += ["--default-artifact-root", str(workdir / "mlflow-artifacts")]
    log = (workdir / "mlflow-server.log").open("w")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(base + "/health", proc, 120)
        from playwright.sync_api import sync_playwright

        samples = []
        with sync_playwright() as pw:
            browser = launch(pw)
            for _ in range(repeat):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                url = f"{base}/#/experiments/{made['experiment_id']}/runs"  # its runs table
                samples.append(table_shown(page, url, made["newest"]))
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    store = uri.split(":", 1)[0]  # the URL's scheme only: it may hold a password
    return {**made, "store": store, "runs_page": medians(samples)}


def _wait_for(url: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer {url} in {seconds:.0f} s")


def run(ctx: Any, backend: str) -> dict[str, Any]:
    """bench/run.py's entry: both UIs on new databases of `backend` (on PostgreSQL, two
    databases of the same throwaway cluster, one for each tool)."""
    size = ctx.size
    url = ctx.new_db(backend, "ui_pages")
    out = measure_tracker(
        url, size.ui_runs, size.ui_browser_reps, size.ui_batch_epochs, size.ui_batch_steps
    )
    if ctx.mlflow:
        mlflow_url = ctx.new_db(backend, "mlflow_ui") if backend == "postgresql" else None
        out["mlflow"] = measure_mlflow(
            ctx.mlflow,
            ctx.scratch(f"mlflow-ui-{backend}"),
            size.mlflow_ui_runs,
            size.ui_browser_reps,
            mlflow_url,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mlflow", action="store_true", help="also MLflow's UI")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = measure_tracker(f"sqlite:///{tmp}/bench.db", args.runs, args.repeat, 100, 10_000)
        p = r["runs_page"]
        print(f"runs page ({args.runs} runs, 50 rows): first contentful paint ", end="")
        print(f"{p['fcp_s'] * 1000:.0f} ms, newest run shown {p['shown_s'] * 1000:.0f} ms")
        print(f"run page, 1,000,000 batch points -> {r['run_page_shown']} drawn: ready in ", end="")
        print(f"{r['run_page_ready_s'] * 1000:.0f} ms")
        if args.mlflow:
            from harness import MlflowEnv

            env = MlflowEnv()
            env.ensure(print)
            m = measure_mlflow(env, Path(tmp), args.runs, args.repeat)["runs_page"]
            fcp = m["fcp_s"] * 1000
            print(f"MLflow UI runs page: first contentful paint {fcp:.0f} ms, ", end="")
            print(f"newest run shown {m['shown_s'] * 1000:.0f} ms")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
