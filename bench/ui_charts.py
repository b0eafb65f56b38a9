"""Time to draw the compare page's charts of 10 runs x 10,000 epochs (loss and val_loss each) in
headless Chromium (issue 13's target: <= 100 ms).

Measured by charts.js itself: per chart, from the moment its data is in hand (fetched and
parsed) to the end of uPlot's first draw (its `draw` hook), read from window.trackerCharts
(`drawMs`); also the wall time from navigation to `#charts[data-state=ready]`, API included.
The server downsamples each series to about the chart's pixel width (min, max and last of
each bucket); `--full` draws the same 10 x 10,000 points without the server's downsampling, by
handing the raw points straight to uPlot in the page (the cost of not downsampling).

Usage: .venv/bin/python bench/ui_charts.py [--runs 10] [--epochs 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from ui_pages import launch  # noqa: E402

from tests.ui_browser import Server  # noqa: E402
from tracker import open_store  # noqa: E402
from tracker.ui.app import create_app  # noqa: E402

FULL_DRAW = """([n, m]) => {
  const xs = Array.from({length: m}, (_, i) => i);
  const data = [xs];
  const series = [{}];
  for (let r = 0; r < n; r++) for (const k of [0, 1]) {
    data.push(xs.map((x) => 1 / (1 + x / 100) + 0.01 * Math.sin(x + r) + k * 0.1 + r * 0.01));
    series.push({stroke: "#0072B2", width: 1, points: {show: false}});
  }
  const box = document.createElement("div");
  document.body.appendChild(box);
  const t0 = performance.now();
  return new Promise((done) => {
    const u = new uPlot({width: 1200, height: 300, series: series, scales: {x: {time: false}},
      hooks: {draw: [() => done(performance.now() - t0)]}}, data, box);
  });
}"""


def make_store(url: str, runs: int, epochs: int) -> list[str]:
    store = open_store(url)
    ids = []
    for r in range(runs):
        run = store.create_run(experiment="bench-ui", name=f"run-{r}", epochs_planned=epochs)
        for e in range(epochs):
            loss = 1 / (1 + e / 100) + 0.01 * math.sin(e + r)
            store.log_epoch(run.id, e, {"loss": loss, "val_loss": loss + 0.1})
        store.finish_run(run.id, status="finished", stop_reason="completed")
        ids.append(run.id)
    store.close()
    return ids


def measure(workdir: Path, runs: int, epochs: int, repeat: int) -> dict[str, Any]:
    url = f"sqlite:///{workdir}/charts.db"
    t = time.perf_counter()
    ids = make_store(url, runs, epochs)
    out: dict[str, Any] = {"runs": runs, "epochs": epochs, "build_s": time.perf_counter() - t}
    store = open_store(url)
    path = "/compare?" + "&".join(f"run={i}" for i in ids)
    draws, walls, full = [], [], []
    from playwright.sync_api import sync_playwright

    with Server(create_app(store)) as server, sync_playwright() as pw:
        browser = launch(pw)
        for _ in range(repeat):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            t = time.perf_counter()
            page.goto(server.base + path)
            page.wait_for_function(
                "() => document.querySelector('#charts')?.dataset.state === 'ready'",
                timeout=60_000,
            )
            walls.append(time.perf_counter() - t)
            charts = page.evaluate("window.trackerCharts")
            draws.append(max(c["drawMs"] for c in charts) / 1000)
            out["shown"], out["total"] = charts[0]["shown"], charts[0]["total"]
            full.append(page.evaluate(FULL_DRAW, [runs, epochs]) / 1000)
            page.close()
        browser.close()
    store.close()
    out["draw_s"] = statistics.median(draws)
    out["ready_s"] = statistics.median(walls)
    out["uplot_all_points_s"] = statistics.median(full)
    return out


def run(ctx: Any, backend: str) -> dict[str, Any]:
    """bench/run.py's entry (SQLite only)."""
    size = ctx.size
    return measure(
        ctx.scratch("ui-charts"), size.ui_chart_runs, size.ui_chart_epochs, size.ui_browser_reps
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(Path(tmp), args.runs, args.epochs, args.repeat)
    print(f"store: {args.runs} runs x {args.epochs} epochs in {r['build_s']:.1f} s")
    print(f"points drawn per chart: {r['shown']} of {r['total']} (server-side downsampling)")
    print(f"charts.js data->first draw, slowest chart: median {r['draw_s'] * 1000:.1f} ms")
    print(f"navigation -> charts ready (API included): median {r['ready_s'] * 1000:.0f} ms")
    n = 2 * args.runs * args.epochs
    alone = r["uplot_all_points_s"] * 1000
    print(f"uPlot alone, {n} points not downsampled: median {alone:.1f} ms")


if __name__ == "__main__":
    main()
