"""The web UI's pages in headless Chromium on the store of bench/ui_api.py (50,000 runs with their
summaries and params, plus a run with 1,000,000 batch points of `loss`): the runs page's first
render (issue 13's target: <= 1 s) and the big run's page with its batch series drawn.

Read from the browser's own timeline (Navigation and Paint Timing): first contentful paint and
the load event of the runs page; for the run page, navigation to `#charts[data-state=ready]`
(the series fetched, downsampled by the server and drawn). Median of --repeat fresh pages.

Usage: .venv/bin/python bench/ui_pages.py [--runs 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ui_api import build  # noqa: E402
from tests.ui_browser import CHROMIUM, Server  # noqa: E402
from tracker import open_store  # noqa: E402
from tracker.ui.app import create_app, open_read_only  # noqa: E402

TIMING = """() => new Promise((done) => {
  const nav = performance.getEntriesByType("navigation")[0];
  new PerformanceObserver((list, obs) => {
    const fcp = list.getEntries().find((p) => p.name === "first-contentful-paint");
    if (!fcp) return;
    obs.disconnect();
    done({fcp: fcp.startTime, load: nav.loadEventEnd, response: nav.responseEnd});
  }).observe({type: "paint", buffered: true});
})"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        t = time.perf_counter()
        with open_store(url) as store:
            build(store, args.runs)
            big = store.resolve_run("million")
            for e in range(100):  # its epochs too: the page lists the keys from the summaries
                store.log_epoch(big, e, {"loss": 1 / (1 + e)})
        took = time.perf_counter() - t
        print(f"store: {args.runs} runs + 1,000,000 batch points in {took:.0f} s")
        runs, run_page = [], []
        with (
            open_read_only(url) as store,
            Server(create_app(store)) as server,
            sync_playwright() as pw,
        ):
            root = ["--no-sandbox"] if os.geteuid() == 0 else []
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=root)
            for _ in range(args.repeat):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(server.base + "/")
                runs.append(page.evaluate(TIMING))
                t = time.perf_counter()
                page.goto(f"{server.base}/runs/{big}?batches=1")
                page.wait_for_function(
                    "() => document.querySelector('#charts')?.dataset.state === 'ready'",
                    timeout=60_000,
                )
                run_page.append((time.perf_counter() - t) * 1000)
                shown = page.evaluate("window.trackerCharts[0].shown")
                page.close()
            browser.close()
    fcp = statistics.median(r["fcp"] for r in runs)
    load = statistics.median(r["load"] for r in runs)
    response = statistics.median(r["response"] for r in runs)
    print(f"runs page ({args.runs} runs, 50 rows): HTML received {response:.0f} ms, ", end="")
    print(f"first contentful paint {fcp:.0f} ms, load event {load:.0f} ms")
    print(f"run page, 1,000,000 batch points -> {shown} drawn: ready in ", end="")
    print(f"{statistics.median(run_page):.0f} ms")


if __name__ == "__main__":
    main()
