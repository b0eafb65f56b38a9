"""The web UI in headless Chromium over a real server, on a store made by real fits, SQLite and
PostgreSQL: what a person sees (rows, sort, filter, markers, compare, live update, escaping), no
console error and no request to another host (checked after every test by the `ui` fixture)."""

# ruff: noqa: F811 - the fixtures imported from tests/ui_browser.py are the tests' parameters
from __future__ import annotations

import math
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

from tests.ui_browser import (  # noqa: F401 - fixtures too
    BATCH_EPOCH_TIMES,
    BATCH_EPOCHS,
    BATCH_STEPS,
    HOSTILE,
    Server,
    batch_value,
    browser,
    fitted,
    log_epoch,
    server,
    ui,
    ui_store,
)
from tracker import checkpoint_files, restore
from tracker.modes import infer_mode

pytestmark = [pytest.mark.browser, pytest.mark.keras]

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73"]


def row_ids(ui) -> list[str]:
    return ui.page.eval_on_selector_all("#runs tbody tr", "rs => rs.map(r => r.dataset.runId)")


def chart(charts, metric):
    return next(c for c in charts if c["metric"] == metric)


def test_runs_table_lists_every_run_newest_first_and_sorts_by_a_header(ui, ui_store):
    ui.open("/")
    shown = row_ids(ui)
    assert shown == [r.run.id for r in ui_store.store.list_runs()]
    assert len(shown) == len(ui_store.fits.ids)

    ui.page.click("#runs thead a[href*='sort=val_loss']")
    ui.page.wait_for_url("**sort=val_loss**")
    order = parse_qs(urlsplit(ui.page.url).query).get("order", ["asc"])[0]
    summaries = {i: ui_store.store.summaries(i).get("val_loss") for i in shown}
    # A run whose val_loss was never finite (the diverged fit, on some backends) has no best.
    best = {i: s.min_value for i, s in summaries.items() if s and s.min_value is not None}
    ranked = sorted(best, key=best.__getitem__, reverse=order == "desc")
    assert row_ids(ui) == ranked + [i for i in shown if i not in best]  # no val_loss: last
    assert row_ids(ui) != shown


def test_a_filter_is_in_the_url_and_survives_a_reload(ui, ui_store):
    ui.open("/")
    ui.page.fill("#filters input[name=q]", "stopped")
    ui.page.click("#filters button[type=submit]")
    ui.page.wait_for_url("**q=stopped**")
    expected = [ui_store.fits.ids["early-stopped"]]
    assert row_ids(ui) == expected
    ui.page.reload()
    assert row_ids(ui) == expected
    assert ui.page.input_value("#filters input[name=q]") == "stopped"


def test_run_page_marks_best_stop_and_restored_epochs_as_keras_reported_them(ui, ui_store):
    fits = ui_store.fits
    run_id = fits.ids["early-stopped"]
    ui.open(f"/runs/{run_id}")
    charts = ui.charts()
    loss = chart(charts, "loss")
    assert set(loss["keys"]) == {"loss", "val_loss"}
    marks = {(m["kind"], m["epoch"]) for m in loss["markers"] if m["kind"] != "checkpoint"}

    val_loss = fits.history["early-stopped"]["val_loss"]
    best = min(range(len(val_loss)), key=val_loss.__getitem__)
    assert ui_store.store.summaries(run_id)["val_loss"].min_epoch == best
    assert fits.stopped_epoch > 0 and fits.es_best_epoch != fits.stopped_epoch
    assert marks == {
        ("best", best),
        ("stopped", fits.stopped_epoch),
        ("restored", fits.es_best_epoch),  # restore_best_weights: EarlyStopping's best epoch
    }
    assert str(best) in ui.page.inner_text("#best-epoch")
    # what was drawn is what History holds, epoch by epoch
    drawn = loss["series"][run_id]
    assert drawn["key"] == "val_loss"
    assert drawn["x"] == list(range(len(val_loss)))
    assert drawn["y"] == pytest.approx(val_loss)
    # the learning rate on a second, logarithmic axis of the loss chart
    assert loss["scales"]["lr"] == "log" and loss["scales"]["lrDistr"] == 3
    assert loss["lr"][run_id]["y"] == pytest.approx([0.05] * len(val_loss))
    assert all(not c["lr"] for c in charts if c["metric"] != "loss")


def test_run_page_ticks_each_checkpoint_epoch_with_its_state(ui, ui_store):
    fits, store = ui_store.fits, ui_store.store
    run_id = fits.ids["checkpointed"]
    ui.open(f"/runs/{run_id}")
    markers = chart(ui.charts(), "loss")["markers"]
    ticks = [m for m in markers if m["kind"] == "checkpoint"]

    # ModelCheckpoint names its files by Keras's 1-based {epoch}; the store by the 0-based epoch
    saved = sorted(int(name[1:3]) - 1 for name in fits.checkpoint_files)
    assert [m["epoch"] for m in ticks if m["source"] == "ModelCheckpoint"] == saved
    assert {m["state"] for m in ticks if m["source"] == "ModelCheckpoint"} == {"ok"}
    records = store.checkpoints(run_id)
    assert [(m["epoch"], m["state"]) for m in ticks] == [
        (c.epoch, checkpoint_files.state(c)) for c in records
    ]
    table = ui.page.eval_on_selector_all(
        "#checkpoints tbody tr", "rs => rs.map(r => [+r.dataset.epoch, r.dataset.state])"
    )
    assert table == [[m["epoch"], m["state"]] for m in ticks]
    # the best marker follows the metric the run was judged by, in its direction
    keys = list(store.summaries(run_id))
    monitor = restore.default_monitor(store.get_run(run_id), records, keys)
    s = store.summaries(run_id)[monitor]
    best = s.min_epoch if infer_mode(monitor) == "min" else s.max_epoch
    assert [m["epoch"] for m in markers if m["kind"] == "best"] == [best]


def test_compare_overlays_three_runs_in_stable_colour_blind_safe_colours(ui, ui_store):
    ids = [ui_store.fits.ids[n] for n in ("early-stopped", "checkpointed", "plain")]
    ui.open("/compare?" + "&".join(f"run={i}" for i in ids))
    charts = ui.charts()
    assert [c["metric"] for c in charts] == ["loss", "accuracy"]
    for c in charts:
        assert c["runs"] == ids
        assert list(c["series"]) == ids  # one drawn series per run and chart
        assert c["colours"] == dict(zip(ids, OKABE_ITO, strict=True))
    for run_id, name in zip(ids, ("early-stopped", "checkpointed", "plain"), strict=True):
        assert chart(charts, "loss")["series"][run_id]["y"] == pytest.approx(
            ui_store.fits.history[name]["val_loss"]
        )
    # the cursor legend: every run's value at the epoch under the mouse
    figure = "#charts figure[data-metric=loss]"
    box = ui.page.locator(f"{figure} .u-over").bounding_box()
    ui.page.mouse.move(box["x"] + 1, box["y"] + box["height"] / 2)  # epoch 0, the left edge
    rows = ui.page.eval_on_selector_all(
        f"{figure} .u-legend tr.u-series",
        "rs => rs.map(r => [r.querySelector('.u-label').textContent,"
        " r.querySelector('.u-value').textContent])",
    )
    values = dict(rows)
    for name in ("early-stopped", "checkpointed", "plain"):
        first = ui_store.fits.history[name]["val_loss"][0]
        assert float(values[f"{name} · val_loss"]) == pytest.approx(first, rel=1e-3)


def test_a_running_run_gets_new_epochs_live_without_losing_the_zoom_then_its_end(ui, ui_store):
    store, run_id = ui_store.store, ui_store.fits.ids["live"]
    ui.open(f"/runs/{run_id}")
    assert ui.page.eval_on_selector("#charts", "e => e.dataset.live") == "true"
    before = chart(ui.charts(), "loss")["series"][run_id]["x"]

    drag(ui, "loss", 0.1, 0.6)
    zoom = ui.page.evaluate("window.trackerCharts[0].zoom")
    assert zoom is not None and zoom["max"] < before[-1]

    new_epoch = before[-1] + 1
    log_epoch(store, run_id, new_epoch)
    ui.page.wait_for_function(
        "([id, e]) => window.trackerCharts[0].series[id].x.includes(e)",
        arg=[run_id, new_epoch],
        timeout=8000,
    )
    after = ui.page.evaluate("window.trackerCharts[0]")
    assert after["series"][run_id]["x"] == [*before, new_epoch]
    assert after["zoom"] == pytest.approx(zoom)

    # the process is interrupted: the page shows the open end at its last epoch, live
    store.finish_run(run_id, status="interrupted", stop_reason="interrupted")
    ui.page.wait_for_function(
        "() => window.trackerCharts[0].markers.some(m => m.kind === 'open_end')", timeout=8000
    )
    ends = [
        m for m in ui.page.evaluate("window.trackerCharts[0].markers") if m["kind"] == "open_end"
    ]
    assert [(m["epoch"], m["status"]) for m in ends] == [(new_epoch, "interrupted")]


def test_a_hostile_run_name_is_shown_as_text_everywhere(ui, ui_store):
    hostile = ui_store.fits.ids["hostile"]
    with ui.page.expect_response(lambda r: "/api/runs?" in r.url, timeout=10_000):
        ui.open("/")  # and wait for the table's live refresh: the name comes back as JSON
    cell = ui.page.locator(f"#runs tr[data-run-id='{hostile}'] td.name")
    assert cell.inner_text() == HOSTILE
    assert ui.page.locator("img").count() == 0
    ui.open(f"/runs/{hostile}")
    ui.charts()
    assert HOSTILE in ui.page.inner_text("h1")
    other = ui_store.fits.ids["plain"]
    ui.open(f"/compare?run={hostile}&run={other}")
    ui.charts()
    assert f"{HOSTILE} · val_loss" in ui.page.inner_text("#charts .u-legend")
    assert ui.page.locator("img").count() == 0
    # dialogs, console errors and foreign hosts are checked by the `ui` fixture


def test_with_a_token_a_request_without_it_is_refused(browser, ui_store):
    from tracker.ui.app import create_app

    token = "s3cret-token"
    with Server(create_app(ui_store.store, token=token)) as server:
        context = browser.new_context()
        try:
            page = context.new_page()
            assert page.goto(server.base + "/").status == 401
            assert context.request.get(server.base + "/api/runs").status == 401
            response = page.goto(f"{server.base}/?token={token}")
            assert response.status == 200
            assert "token" not in page.url
            assert page.locator("#runs tbody tr").count() == len(ui_store.fits.ids)
            assert context.request.get(server.base + "/api/runs").status == 200
        finally:
            context.close()


def line(entry, run_id, key, raw=False):
    return next(
        ln
        for ln in entry["lines"]
        if ln["run_id"] == run_id and ln["key"] == key and ln["raw"] == raw
    )


def test_terminate_on_nan_is_marked_and_its_non_finite_values_are_gaps(ui, ui_store):
    fits = ui_store.fits
    run_id = fits.ids["diverged"]
    ui.open(f"/runs/{run_id}")
    loss = chart(ui.charts(), "loss")
    history = fits.history["diverged"]["loss"]
    first_bad = next(e for e, v in enumerate(history) if not math.isfinite(v))
    assert [m["epoch"] for m in loss["markers"] if m["kind"] == "nan"] == [first_bad]
    drawn = line(loss, run_id, "loss")
    assert drawn["x"] == list(range(len(history)))
    assert drawn["y"] == [v if math.isfinite(v) else None for v in history]


def test_a_failed_run_has_an_open_end_at_its_last_epoch(ui, ui_store):
    run_id = ui_store.fits.ids["failed"]
    assert ui_store.store.get_run(run_id).status == "failed"
    ui.open(f"/runs/{run_id}")
    markers = chart(ui.charts(), "loss")["markers"]
    ends = [m for m in markers if m["kind"] == "open_end"]
    assert [(m["epoch"], m["status"]) for m in ends] == [(ui_store.fits.failed_at, "failed")]


def test_a_run_whose_process_died_shows_crashed_with_an_open_end(ui, ui_store):
    run_id = ui_store.fits.ids["crashed"]
    assert ui_store.store.get_run(run_id).status == "crashed"  # as the CLI shows it
    ui.open("/")
    badge = ui.page.locator(f"#runs tr[data-run-id='{run_id}'] td[data-col=status]")
    assert badge.inner_text() == "crashed"
    ui.open(f"/runs/{run_id}")
    markers = chart(ui.charts(), "loss")["markers"]
    assert [(m["kind"], m["epoch"], m["status"]) for m in markers if m["kind"] == "open_end"] == [
        ("open_end", 1, "crashed")
    ]


def test_elapsed_time_log_y_and_smoothing_are_drawn_and_kept_in_the_url(ui, ui_store):
    store, run_id = ui_store.store, ui_store.fits.ids["plain"]
    ui.open(f"/runs/{run_id}")
    ui.charts()
    ui.page.select_option("#charts select[name=x]", "time")
    ui.page.select_option("#charts select[name=y]", "log")
    ui.page.wait_for_url("**y=log**")
    assert parse_qs(urlsplit(ui.page.url).query) == {"x": ["time"], "y": ["log"]}

    times = [p.value for p in store.metric_history(run_id, ["epoch_time_s"])]
    elapsed = [sum(times[: i + 1]) for i in range(len(times))]
    loss = chart(ui.page.evaluate("window.trackerCharts"), "loss")
    assert loss["series"][run_id]["x"] == pytest.approx(elapsed)
    best = next(m for m in loss["markers"] if m["kind"] == "best")
    assert best["x"] == pytest.approx(elapsed[best["epoch"]])
    assert loss["scales"]["y"] == "log" and loss["scales"]["yDistr"] == 3

    ui.open(f"/runs/{run_id}?x=time&y=log&smooth=0.5")
    loss = chart(ui.charts(), "loss")
    assert loss["scales"]["x"] == "time" and loss["scales"]["yDistr"] == 3
    assert ui.page.input_value("#charts input[name=smooth]") == "0.5"
    raw = ui_store.fits.history["plain"]["val_loss"]
    assert line(loss, run_id, "val_loss", raw=True)["y"] == pytest.approx(raw)
    ema, last = [], 0.0
    for n, v in enumerate(raw, 1):  # debiased EMA, as TensorBoard smooths
        last = last * 0.5 + 0.5 * v
        ema.append(last / (1 - 0.5**n))
    assert loss["series"][run_id]["y"] == pytest.approx(ema)


def test_batch_series_are_downsampled_and_a_zoom_fetches_its_range_again(ui, ui_store):
    run_id = ui_store.fits.ids["batches"]
    ui.open(f"/runs/{run_id}?batches=1")
    loss = chart(ui.charts(), "loss")
    drawn = line(loss, run_id, "loss")
    total = BATCH_EPOCHS * BATCH_STEPS
    assert loss["total"] == total + BATCH_EPOCHS  # the batches of loss, the epochs of val_loss
    assert len(drawn["x"]) < total / 3
    assert loss["shown"] == len(drawn["x"]) + BATCH_EPOCHS
    note = ui.page.inner_text("#charts figure[data-metric=loss] .chart-points")
    assert f"{loss['shown']} of {loss['total']} points" in note

    drag(ui, "loss", 0.3, 0.4)
    ui.page.wait_for_function("() => window.trackerCharts[0].refetched")
    zoomed = ui.page.evaluate("window.trackerCharts[0]")
    lo, hi = zoomed["zoom"]["min"], zoomed["zoom"]["max"]
    inside = [x for x in line(zoomed, run_id, "loss")["x"] if lo <= x <= hi]
    assert len(inside) > 2 * len([x for x in drawn["x"] if lo <= x <= hi])

    ui.page.dblclick("#charts figure[data-metric=loss] .u-over")
    ui.page.wait_for_function("() => !window.trackerCharts[0].refetched")
    reset = ui.page.evaluate("window.trackerCharts[0]")
    assert reset["zoom"] is None and reset["shown"] == loss["shown"]


def test_a_zoom_on_elapsed_time_fetches_its_range_again(ui, ui_store):
    """x = elapsed time: the zoom's time range is fetched again as batch positions, and every
    batch point whose time falls in it is drawn at that time."""
    run_id = ui_store.fits.ids["batches"]
    ui.open(f"/runs/{run_id}?batches=1&x=time")
    before = line(chart(ui.charts(), "loss"), run_id, "loss")
    assert max(before["x"]) <= sum(BATCH_EPOCH_TIMES) and len(before["x"]) < 4000

    drag(ui, "loss", 0.3, 0.4)
    ui.page.wait_for_function("() => window.trackerCharts[0].refetched")
    zoomed = ui.page.evaluate("window.trackerCharts[0]")
    lo, hi = zoomed["zoom"]["min"], zoomed["zoom"]["max"]
    drawn = line(zoomed, run_id, "loss")
    inside = [(x, y) for x, y in zip(drawn["x"], drawn["y"], strict=True) if lo <= x <= hi]
    expected = []
    start = 0.0
    for e, d in enumerate(BATCH_EPOCH_TIMES):
        for s in range(BATCH_STEPS):
            t = start + s / BATCH_STEPS * d
            if lo <= t <= hi:
                expected.append((t, batch_value(e, s)))
        start += d
    assert len(expected) > 2 * len([x for x in before["x"] if lo <= x <= hi])
    assert [x for x, _ in inside] == pytest.approx([t for t, _ in expected], abs=1e-9)
    assert [y for _, y in inside] == pytest.approx([v for _, v in expected])


def test_batch_view_puts_epoch_values_and_markers_at_their_epochs_end(ui, ui_store):
    """With batches, x = epoch + step / steps: epoch e's batches span [e, e + 1), so its
    val_loss and the best-epoch marker sit at e + 1, after its last batch."""
    run_id = ui_store.fits.ids["batches"]
    ui.open(f"/runs/{run_id}?batches=1")
    loss = chart(ui.charts(), "loss")
    val = line(loss, run_id, "val_loss")
    assert val["x"] == [e + 1 for e in range(BATCH_EPOCHS)]
    assert val["y"] == pytest.approx([1.1 / (e + 1) for e in range(BATCH_EPOCHS)])
    best = next(m for m in loss["markers"] if m["kind"] == "best")
    assert best["epoch"] == BATCH_EPOCHS - 1 and best["x"] == BATCH_EPOCHS
    batches = line(loss, run_id, "loss")["x"]
    assert max(batches) == pytest.approx(BATCH_EPOCHS - 1 + (BATCH_STEPS - 1) / BATCH_STEPS)

    ui.open(f"/runs/{run_id}")  # by epoch: each value at its epoch, as everywhere else
    loss = chart(ui.charts(), "loss")
    assert line(loss, run_id, "val_loss")["x"] == list(range(BATCH_EPOCHS))
    assert next(m for m in loss["markers"] if m["kind"] == "best")["x"] == BATCH_EPOCHS - 1


def test_a_run_with_batch_points_and_no_epoch_yet_charts_its_batches(ui, ui_store):
    run_id = ui_store.fits.ids["batches-only"]
    ui.open(f"/runs/{run_id}")
    loss = chart(ui.charts(), "loss")
    drawn = line(loss, run_id, "loss")
    assert drawn["x"] == pytest.approx([s / 100 for s in range(100)])
    assert drawn["y"] == pytest.approx([2.0 - s / 100 for s in range(100)])
    text = ui.page.inner_text("#charts")
    assert "No epochs recorded yet" not in text and "100 points" in text


def test_back_and_forward_step_through_the_chart_views(ui, ui_store):
    run_id = ui_store.fits.ids["plain"]
    ui.open(f"/runs/{run_id}")
    ui.charts()
    ui.page.select_option("#charts select[name=x]", "time")
    ui.page.wait_for_url("**x=time**")
    ui.page.select_option("#charts select[name=y]", "log")
    ui.page.wait_for_url("**y=log**")

    def view():
        loss = chart(ui.page.evaluate("window.trackerCharts"), "loss")
        shown = (
            ui.page.input_value("#charts select[name=x]"),
            ui.page.input_value("#charts select[name=y]"),
        )
        return parse_qs(urlsplit(ui.page.url).query), shown, loss["scales"]["yDistr"]

    ui.page.go_back()
    ui.page.wait_for_function("() => window.trackerCharts[0].scales.y === 'lin'")
    assert view() == ({"x": ["time"]}, ("time", "lin"), 1)
    ui.page.go_back()
    ui.page.wait_for_function("() => window.trackerCharts[0].scales.x === 'epoch'")
    assert view() == ({}, ("epoch", "lin"), 1)
    ui.page.go_forward()
    ui.page.wait_for_function("() => window.trackerCharts[0].scales.x === 'time'")
    assert view() == ({"x": ["time"]}, ("time", "lin"), 1)
    ui.page.reload()  # a reload (or the copied link) gives the same view
    ui.charts()
    assert view() == ({"x": ["time"]}, ("time", "lin"), 1)


def test_the_theme_toggle_redraws_the_charts_in_its_colours(ui, ui_store):
    ui.open(f"/runs/{ui_store.fits.ids['plain']}")
    before = ui.charts()[0]["fg"]
    colour = "() => getComputedStyle(document.querySelector('#charts')).color"
    assert before == ui.page.evaluate(colour)
    ui.page.click("#theme-toggle")
    ui.page.wait_for_function(f"() => window.trackerCharts[0].fg !== {before!r}")
    after = ui.page.evaluate("window.trackerCharts[0].fg")
    assert after == ui.page.evaluate(colour) and after != before


def drag(ui, metric, start, end):
    """Drag across a chart from `start` to `end` (fractions of its width), as a person zooms."""
    box = ui.page.locator(f"#charts figure[data-metric={metric}] .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    ui.page.mouse.move(box["x"] + box["width"] * start, y)
    ui.page.mouse.down()
    ui.page.mouse.move(box["x"] + box["width"] * end, y, steps=5)
    ui.page.mouse.up()


def test_tracker_ui_bound_off_loopback_lets_no_one_in_without_its_token(browser, ui_store):
    """`tracker ui --host 0.0.0.0` as a user runs it: the token it printed opens the UI, a
    request without it gets 401, Ctrl-C stops it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tracker = Path(sys.executable).with_name("tracker")
    command = [str(tracker), "--db", ui_store.url, "ui", "--host", "0.0.0.0", "--port", str(port)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        printed = ""
        while "?token=" not in printed:
            line = proc.stderr.readline()
            assert line, f"tracker ui ended: {printed}"
            printed += line
        token = unquote(re.search(r"\?token=(\S+)", printed)[1])
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while not listening(port):
            assert time.monotonic() < deadline, "tracker ui did not listen"
            time.sleep(0.1)
        context = browser.new_context()
        try:
            page = context.new_page()
            assert page.goto(base + "/").status == 401
            assert page.goto(base + f"/runs/{ui_store.fits.ids['plain']}").status == 401
            assert page.goto(f"{base}/?token={token}x").status == 401
            assert page.goto(f"{base}/?token={quote(token)}").status == 200
            assert page.locator("#runs tbody tr").count() == len(ui_store.fits.ids)
        finally:
            context.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
