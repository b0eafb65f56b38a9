"""Fixtures of the web UI's real-browser tests: a store made by real fits, the app under uvicorn
on 127.0.0.1 in a thread, and headless Chromium (Debian's, not Playwright's download) driven by
Playwright, recording console errors, dialogs and the host of every request.

Under CI=true a browser that cannot start fails the run, as a missing PostgreSQL does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import IN_CI, _pg_schema_url
from tracker import Store, open_store
from tracker.records import MetricPoint

CHROMIUM = os.environ.get("TRACKER_TEST_CHROMIUM", "/usr/bin/chromium")
HOSTILE = "<img src=x onerror=alert(1)>"
LONG_HEARTBEAT = 3600.0  # the open run stays `running` for the whole module
# charts drawn or their error shown (a function: the page's CSP forbids eval, Playwright's too)
SETTLED = "() => ['ready', 'error'].includes(document.querySelector('#charts')?.dataset.state)"


@dataclass
class Fits:
    """What Keras itself said about the fits, to hold the UI against."""

    ids: dict[str, str] = field(default_factory=dict)  # run name -> id
    history: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    stopped_epoch: int = 0
    es_best_epoch: int = 0
    checkpoint_files: list[str] = field(default_factory=list)
    failed_at: int = 0  # the epoch whose end raised


def make_fits(store: Store, workdir: Path) -> Fits:
    """Three real fits with different hyperparameters: EarlyStopping that stops and restores,
    ModelCheckpoint saving on improvement, and a plain one that runs all its epochs."""
    import keras

    from tests import keras_helpers as kh
    from tracker import TrackingCallback

    fits = Fits()

    def tracked(
        name: str, lr: float, seed: int, callbacks: list[Any], epochs: int, m: Any = None
    ) -> None:
        fits.history[name] = {}
        cb = TrackingCallback(
            store=store,
            experiment="ui",
            run_name=name,
            params={"lr": lr, "seed": seed},
            tags={"suite": "browser"},
            artifacts_dir=str(workdir / "artifacts"),
        )
        fits.ids[name] = ""
        try:
            m = m if m is not None else kh.model(lr=lr, seed=seed)
            h = kh.fit(m, [*callbacks, cb], epochs=epochs)
        finally:
            fits.ids[name] = cb.run_id
        fits.history[name] = {k: [float(v) for v in vs] for k, vs in h.history.items()}

    es = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=2, min_delta=0.02, restore_best_weights=True
    )
    tracked("early-stopped", 0.05, 0, [es], epochs=30)
    fits.stopped_epoch, fits.es_best_epoch = es.stopped_epoch, es.best_epoch
    ck_dir = workdir / "checkpoints"
    ck = keras.callbacks.ModelCheckpoint(
        str(ck_dir / "e{epoch:02d}.keras"), monitor="val_accuracy", save_best_only=True
    )
    tracked("checkpointed", 1.0, 1, [ck], epochs=8)
    fits.checkpoint_files = sorted(p.name for p in ck_dir.iterdir())
    tracked("plain", 0.2, 2, [], epochs=6)
    # a learning rate that blows the loss of a linear output up to inf: TerminateOnNaN ends the
    # fit (on every backend: a sigmoid's clipped crossentropy stays finite on torch and JAX)
    keras.utils.set_random_seed(3)
    linear = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
    )
    linear.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse", metrics=["mae"])
    tracked("diverged", 1.0, 3, [keras.callbacks.TerminateOnNaN()], epochs=5, m=linear)

    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch == fits.failed_at:
                raise RuntimeError("boom")

    fits.failed_at = 2
    with contextlib.suppress(RuntimeError):
        tracked("failed", 0.05, 4, [Boom()], epochs=5)
    return fits


def add_open_runs(store: Store, fits: Fits) -> None:
    """A run still `running` (created through the store and left open) and a finished run whose
    name is markup."""
    live = store.create_run(
        experiment="ui", name="live", params={"lr": 0.01}, epochs_planned=10,
        heartbeat_interval=LONG_HEARTBEAT,
    )  # fmt: skip
    for e in range(3):
        log_epoch(store, live.id, e)
    hostile = store.create_run(experiment="ui", name=HOSTILE, params={"lr": 0.3})
    for e in range(2):
        log_epoch(store, hostile.id, e)
    store.finish_run(hostile.id, status="finished", stop_reason="completed")
    fits.ids["live"], fits.ids["hostile"] = live.id, hostile.id
    fits.ids["batches"] = batch_run(store)
    fits.ids["batches-only"] = batches_only_run(store)
    # a process that died: its heartbeat deadline (two intervals) passed long ago
    dead = store.create_run(experiment="ui", name="died", heartbeat_interval=0.001)
    for e in range(2):
        store.log_epoch(dead.id, e, {"loss": 1.0 / (e + 1)}, heartbeat_interval=0.001)
    fits.ids["crashed"] = dead.id


BATCH_EPOCHS, BATCH_STEPS = 4, 5000
BATCH_EPOCH_TIMES = [2.0, 3.0, 4.0, 5.0]  # seconds: epochs of different lengths


def batch_value(e: int, s: int) -> float:
    return 1.0 / (1 + e + s / BATCH_STEPS) + 0.05 * (s % 7)


def batch_run(store: Store) -> str:
    """A run with 20,000 batch points of `loss`: more than a chart shows, so downsampled; its
    epochs took BATCH_EPOCH_TIMES (for the elapsed-time axis)."""
    run = store.create_run(
        experiment="ui", name="many-batches", fit_params={"steps": BATCH_STEPS},
        epochs_planned=BATCH_EPOCHS,
    )  # fmt: skip
    now = datetime.now(timezone.utc)
    for e in range(BATCH_EPOCHS):
        points = [MetricPoint("loss", e, s, batch_value(e, s), now) for s in range(BATCH_STEPS)]
        metrics = {"loss": 1.0 / (e + 1), "val_loss": 1.1 / (e + 1)}
        metrics["epoch_time_s"] = BATCH_EPOCH_TIMES[e]
        store.log_epoch(run.id, e, metrics, batches=points)
    store.finish_run(run.id, status="finished", stop_reason="completed")
    return run.id


def batches_only_run(store: Store) -> str:
    """A run in its first epoch with `log_every_n_batches`: 100 batch points, no epoch yet."""
    run = store.create_run(
        experiment="ui", name="first-epoch", epochs_planned=3, heartbeat_interval=LONG_HEARTBEAT
    )
    now = datetime.now(timezone.utc)
    store.log_batch_metrics(
        run.id, [MetricPoint("loss", 0, s, 2.0 - s / 100, now) for s in range(100)]
    )
    return run.id


def log_epoch(store: Store, run_id: str, epoch: int) -> None:
    metrics = {
        "loss": 1.0 / (epoch + 1),
        "val_loss": 1.2 / (epoch + 1),
        "lr": 0.01 * 0.5**epoch,
        "epoch_time_s": 0.5,
    }
    store.log_epoch(run_id, epoch, metrics, heartbeat_interval=LONG_HEARTBEAT)


@dataclass
class UIStore:
    url: str
    store: Store
    fits: Fits


@pytest.fixture(scope="session")
def fitted(tmp_path_factory) -> Iterator[tuple[Store, Fits]]:
    """The real fits, once per session, into a SQLite store (copied into PostgreSQL below)."""
    if not IN_CI:  # under CI=true Keras is installed: a missing one fails the run
        pytest.importorskip("keras")
    workdir = tmp_path_factory.mktemp("ui-fits")
    store = open_store(f"sqlite:///{workdir}/fits.db")
    try:
        yield store, make_fits(store, workdir)
    finally:
        store.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ui_store(request, fitted, tmp_path_factory) -> Iterator[UIStore]:
    """A store per database holding the fits (exported from the SQLite store they were made in
    and imported, files and hashes as recorded) plus the open and hostile runs."""
    source, made = fitted
    urls: Iterator[str]
    if request.param == "sqlite":
        urls = iter([f"sqlite:///{tmp_path_factory.mktemp('ui-db')}/ui.db"])
    else:
        urls = _pg_schema_url(request.getfixturevalue("pg_server"))
    url = next(urls)
    store = open_store(url)
    try:
        store.import_runs([source.export_run(run_id) for run_id in made.ids.values()])
        fits = dataclasses.replace(made, ids=dict(made.ids))
        add_open_runs(store, fits)
        yield UIStore(url, store, fits)
    finally:
        store.close()
        for _ in urls:  # the PostgreSQL schema is dropped
            pass


class Server:
    """The app under uvicorn on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the UI server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def server(ui_store) -> Iterator[Server]:
    from tracker.ui.app import create_app

    with Server(create_app(ui_store.store)) as s:
        yield s


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium; under CI=true one that cannot start fails the run."""
    try:
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
    except Exception as e:  # noqa: BLE001 - reported as the reason
        _unavailable(f"Playwright could not start: {e}")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    except Exception as e:  # noqa: BLE001
        pw.stop()
        _unavailable(f"Chromium ({CHROMIUM}) could not start: {str(e).splitlines()[0]}")
    try:
        yield b
    finally:
        b.close()
        pw.stop()


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (under CI=true a browser is required)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Watched:
    """A page with what it did: console errors, page errors, dialogs, hosts it requested."""

    page: Any
    base: str
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)
    pending: dict[Any, float] = field(default_factory=dict)  # request -> when it was sent

    def open(self, path: str) -> Any:
        response = self.page.goto(self.base + path)
        self.page.wait_for_load_state("load")
        return response

    def charts(self, timeout: float = 30_000) -> list[dict[str, Any]]:
        """window.trackerCharts once the charts are drawn. A page that does not settle fails
        with what it was waiting for; the wait is long enough for a loaded machine (charts
        take well under a second here), short of hiding a request that never ends."""
        try:
            self.page.wait_for_function(SETTLED, timeout=timeout)
            unsettled = None
        except Exception as e:  # noqa: BLE001 - reported with what the page and server were doing
            unsettled = f"{str(e).splitlines()[0]}\n{self.stalled()}"
        if unsettled:
            pytest.fail(unsettled, pytrace=False)
        state = self.page.eval_on_selector("#charts", "e => e.dataset.state")
        assert state == "ready", self.page.inner_text("#charts")
        return self.page.evaluate("window.trackerCharts")

    def stalled(self) -> str:
        """What a page that did not settle was waiting for: its requests still unanswered and
        the stacks of the process's other threads (the UI server's among them)."""
        now = time.monotonic()
        lines = [f"charts state: {self.page.eval_on_selector('#charts', 'e => e.dataset.state')}"]
        lines += [f"unanswered after {now - t:.1f} s: {r.url}" for r, t in self.pending.items()]
        main = threading.main_thread().ident
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            stack = "".join(traceback.format_stack(frame)[-8:])
            if ident != main and "self.queue.get()" not in stack:  # not an idle worker
                lines.append(f"thread {names.get(ident, ident)}:\n{stack}")
        return "\n".join(lines)


def watch(page: Any, base: str) -> Watched:
    w = Watched(page, base)

    def console(m: Any) -> None:
        if m.type == "error":
            w.errors.append(f"{m.text} {m.location}")

    page.on("console", console)
    page.on("pageerror", lambda e: w.errors.append(f"page error: {e}"))

    def request(r: Any) -> None:
        w.hosts.add(urlsplit(r.url).netloc)
        w.pending[r] = time.monotonic()

    page.on("request", request)
    page.on("requestfinished", lambda r: w.pending.pop(r, None))
    page.on("requestfailed", lambda r: w.pending.pop(r, None))

    def dialog(d: Any) -> None:
        w.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    return w


@pytest.fixture
def ui(browser, server) -> Iterator[Watched]:
    """A fresh browser context on the module's server; asserts at teardown that the page made
    no console error and asked no other host for anything."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    w = watch(page, server.base)
    try:
        yield w
    finally:
        context.close()
    assert w.errors == [], w.errors
    assert w.hosts <= {f"127.0.0.1:{server.port}"}, w.hosts
    assert w.dialogs == [], w.dialogs
