"""`tracker ui` without a browser: the JSON API against the CLI's JSON, paging, series
downsampling, errors, security headers, the token, read-only access and escaping, on SQLite and
PostgreSQL (Starlette's TestClient, in process)."""

from __future__ import annotations

import math
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from tracker import Store, open_store
from tracker.records import MetricPoint
from tracker.store.series_reads import all_rows
from tracker.ui import series as ser
from tracker.ui.app import create_app, open_read_only, read_only_url

from .cli_support import checkpoint_file, ok_json, run, strict_json
from .helpers import seed_run, seed_three

HOSTILE = "<img src=x onerror=alert(1)>"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LOCAL = "http://127.0.0.1:5000"


@pytest.fixture
def ro_store(db_url, store: Store):
    """A read-only store on the same database as `store` (which the test seeds first)."""
    s = open_read_only(db_url)
    yield s
    s.close()


@pytest.fixture
def client(ro_store):
    with TestClient(create_app(ro_store), base_url=LOCAL) as c:
        yield c


def get_json(client, url, status=200):
    r = client.get(url)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    return strict_json(r.text)


def without_values(page):
    return [{k: v for k, v in r.items() if k != "values"} for r in page["runs"]]


# -- the API is the CLI's JSON --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "args"),
    [
        ("", []),
        ("?sort=val_loss", ["--sort", "val_loss"]),
        ("?metric=accuracy&agg=last", ["--metric", "accuracy", "--agg", "last"]),
        ("?experiment=default&tag=team=x", ["--experiment", "default", "--tag", "team=x"]),
        ("?param=units=32&status=finished", ["--param", "units=32", "--status", "finished"]),
    ],
)
def test_runs_equal_runs_list(db_url, store, client, query, args):
    seed_three(store)
    page = get_json(client, "/api/runs" + query)
    assert without_values(page) == ok_json(db_url, "runs", "list", *args)
    assert page["total"] == len(page["runs"])


def test_env_filter_equals_runs_list_env(db_url, store, client):
    """`env=KEY=VALUE` filters on what the run ran on, as `runs list --env` does, and the runs
    page keeps it in its form."""
    ids = seed_three(store)
    store.update_run(ids["a"], environment={"backend": "jax", "python": "3.11.7"})
    store.update_run(ids["b"], environment={"backend": "torch", "python": "3.11.7"})
    page = get_json(client, "/api/runs?env=backend=jax")
    assert names_of(page) == ["run-a"] and page["total"] == 1
    assert without_values(page) == ok_json(db_url, "runs", "list", "--env", "backend=jax")
    both = get_json(client, "/api/runs?env=python=3.11.7")
    assert sorted(names_of(both)) == ["run-a", "run-b"]
    assert 'name="env" value="backend=jax"' in client.get("/?env=backend=jax").text


def test_run_equals_runs_show_with_restore_commands(db_url, store, client, tmp_path):
    ids = seed_three(store)
    checkpoint_file(store, ids["a"], tmp_path / "e1.weights.h5", b"w", epoch=1)
    data = get_json(client, "/api/runs/run-a")
    commands = data.pop("restore_commands")
    modes = data.pop("modes")
    assert data == ok_json(db_url, "runs", "show", "run-a")
    # each metric's direction as `best` decides it: best --metric K --mode auto agrees
    for key, mode in modes.items():
        if mode is not None:
            assert ok_json(db_url, "best", "--metric", key)["mode"] == mode
    assert modes["val_loss"] == "min" and modes["accuracy"] == "max"
    assert data["checkpoints"][0]["state"] == "ok"
    assert commands == {"0": f"tracker restore {ids['a']} --epoch 1 --to e1.weights.h5"}


@pytest.mark.parametrize(
    ("query", "args"),
    [("", []), ("?metric=accuracy&top=2", ["--metric", "accuracy", "--top", "2"])],
)
def test_best_equals_cli(db_url, store, client, query, args):
    seed_three(store)
    assert get_json(client, "/api/best" + query) == ok_json(db_url, "best", *args)


def test_compare_equals_cli(db_url, store, client):
    seed_three(store)
    data = get_json(client, "/api/compare?run=run-a&run=run-b&run=run-c")
    assert data == ok_json(db_url, "compare", "run-a", "run-b", "run-c")
    shown = get_json(client, "/api/compare?run=run-a&run=run-b&metric=loss&all=1")
    assert shown == ok_json(db_url, "compare", "run-a", "run-b", "--metric", "loss", "--all")


# -- paging, sorting, filtering -------------------------------------------------------------------


def seed_many(store, n=7):
    names = [f"Run-{i}" for i in range(n)]
    for i, name in enumerate(names):
        seed_run(
            store,
            {"val_loss": [1.0, 0.5 + i / 100], "accuracy": [0.1 * i]},
            name=name,
            params={"i": i},
            tags={"odd": str(i % 2)},
            finish="early_stopping" if i % 3 == 0 else "completed",
            started_at=T0 + timedelta(minutes=i),
        )
    return names


def names_of(page):
    return [r["name"] for r in page["runs"]]


def test_paging_total_offset_limit(store, client):
    names = seed_many(store)
    page = get_json(client, "/api/runs?limit=3&offset=3")
    assert (page["total"], page["offset"], page["limit"]) == (7, 3, 3)
    assert names_of(page) == names[::-1][3:6]


def test_sort_by_metric_name_and_order(store, client):
    names = seed_many(store)
    assert names_of(get_json(client, "/api/runs?sort=val_loss&limit=2")) == names[:2]
    assert names_of(get_json(client, "/api/runs?sort=val_loss&order=desc&limit=2")) == [
        names[6],
        names[5],
    ]
    assert names_of(get_json(client, "/api/runs?sort=name")) == names
    assert names_of(get_json(client, "/api/runs?sort=name&order=desc"))[0] == names[-1]


def test_metric_values_for_every_shown_metric(store, client):
    seed_many(store, 2)
    page = get_json(client, "/api/runs?metric=val_loss&metric=accuracy")
    assert page["metrics"] == ["val_loss", "accuracy"]
    assert page["runs"][0]["values"] == {
        "val_loss": {"value": 0.51, "epoch": 1, "mode": "min"},
        "accuracy": {"value": 0.1, "epoch": 0, "mode": "max"},
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("tag=odd=1", {1, 3, 5}),
        ("param=i=4", {4}),
        ("stop_reason=early_stopping", {0, 3, 6}),
        ("status=finished&stop_reason=completed", {1, 2, 4, 5}),
        ("q=run-5", {5}),  # any case
        ("since=2026-01-01T00:05:00%2B00:00", {5, 6}),
    ],
)
def test_filters(store, client, query, expected):
    seed_many(store)
    page = get_json(client, f"/api/runs?{query}")
    assert {int(n.split("-")[1]) for n in names_of(page)} == expected
    assert page["total"] == len(expected)


def test_text_filter_is_text_not_a_pattern(store, client):
    seed_run(store, {"loss": [1.0]}, name="a%b_c")
    seed_run(store, {"loss": [1.0]}, name="axbyc")
    assert names_of(get_json(client, "/api/runs?q=%25b_")) == ["a%b_c"]


# -- series ---------------------------------------------------------------------------------------


def seed_batches(store, epochs=4, steps=500):
    """A run with a batch-level `loss` of epochs x steps points: a known spike (global max) at
    epoch 1 step 7, a known dip (global min) at epoch 2 step 300."""
    run_id = seed_run(store, {"loss": [1.0] * epochs}, name="batchy")
    store.update_run(run_id, fit_params={"steps": steps})
    rng = random.Random(1)
    points = []
    for e in range(epochs):
        for s in range(steps):
            v = 1.0 + rng.random() / 10
            v = 9.0 if (e, s) == (1, 7) else -3.0 if (e, s) == (2, 300) else v
            points.append(MetricPoint("loss", e, s, v, T0))
    store.log_batch_metrics(run_id, points)
    return run_id


def test_series_downsampled_keeps_min_max_last(store, client):
    seed_batches(store)
    data = get_json(client, "/api/runs/batchy/series?key=loss&batches=1&max_points=300")
    s = data["series"]["loss"]
    assert data["batches"] is True and s["total"] == 2000 and s["shown"] == len(s["x"]) <= 300
    assert 9.0 in s["value"] and -3.0 in s["value"]
    assert (s["epoch"][-1], s["step"][-1]) == (3, 499) and s["x"] == sorted(s["x"])
    assert s["x"][s["value"].index(9.0)] == pytest.approx(1 + 7 / 500)


def test_series_zoom_and_after_epoch(store, client):
    seed_batches(store)
    url = "/api/runs/batchy/series?key=loss&batches=1"
    zoom = get_json(client, f"{url}&x_min=1.5&x_max=2.0&max_points=10000")["series"]["loss"]
    assert zoom["total"] == zoom["shown"] == 251  # 1.5 .. 2.0 inclusive, 500 steps an epoch
    assert min(zoom["x"]) >= 1.5 and max(zoom["x"]) <= 2.0
    later = get_json(client, f"{url}&after_epoch=2&max_points=10000")["series"]["loss"]
    assert set(later["epoch"]) == {3} and later["total"] == 500


def seed_awkward_batches(store, steps_per_epoch, epoch_writes=False):
    """A batch-level `loss` that tests every rule of the blocks: NaN (alone and whole blocks of
    it), infinities, ties of the minimum and maximum, a missing step, epochs of different
    lengths, written in chunks that split blocks (so stored blocks are merged with new points).
    With `epoch_writes`, the last two thirds of each epoch's points come with its epoch's
    write (on PostgreSQL a statement of its own), the first third in chunks before it."""
    run_id = seed_run(store, {"loss": [1.0] * 6}, name="awkward")
    if steps_per_epoch:
        store.update_run(run_id, fit_params={"steps": steps_per_epoch})
    rng = random.Random(7)
    points = []
    for e, n in enumerate([300, 130, 64, 1, 700, 257]):
        for s in range(n):
            if (e, s) == (1, 50):
                continue  # a step never recorded
            v = round(rng.random(), 1)  # many ties
            v = math.nan if rng.random() < 0.05 or (e == 4 and 128 <= s < 192) else v
            v = {(0, 10): math.inf, (4, 5): -math.inf, (5, 256): math.nan}.get((e, s), v)
            points.append(MetricPoint("loss", e, s, v, T0))
    if epoch_writes:
        for e in range(6):
            mine = [p for p in points if p.epoch == e]
            first = mine[: len(mine) // 3]
            for i in range(0, len(first), 37):
                store.log_batch_metrics(run_id, first[i : i + 37])
            store.log_epoch(run_id, e, {}, batches=mine[len(first) :])
        return run_id
    for i in range(0, len(points), 37):
        store.log_batch_metrics(run_id, points[i : i + 37])
    return run_id


@pytest.mark.parametrize(
    ("steps_per_epoch", "epoch_writes"), [(None, False), (800, False), (None, True)]
)
def test_batch_series_from_blocks_equal_reading_every_point(
    store, client, steps_per_epoch, epoch_writes
):
    """The block summaries give, bucket by bucket, the very min, max and last points that
    downsampling every raw row gives (served by the API; the reference reads all rows)."""
    run_id = seed_awkward_batches(store, steps_per_epoch, epoch_writes)
    rows = store.metric_series(run_id, ["loss"], all_rows, batches=True)[1]["loss"]
    assert len(rows) == 1451
    url = f"/api/runs/{run_id}/series?key=loss&batches=1"
    cases = [(None, None, 3), (None, None, 30), (None, None, 800), (None, None, 2000)]
    cases += [(0.5, 4.7, 60), (0.013, 4.2, 99), (4.0, 4.9, 30), (2.0, 3.0, 9), (5.2, None, 12)]
    cases += [(1.0, 1.0, 3), (6.5, 9.0, 30), (None, 0.2, 6)]
    for x_min, x_max, max_points in cases:
        q = f"{url}&max_points={max_points}"
        q += "" if x_min is None else f"&x_min={x_min}"
        q += "" if x_max is None else f"&x_max={x_max}"
        got = get_json(client, q)["series"]["loss"]
        want = ser.build(
            rows,
            batches=True,
            steps_per_epoch=steps_per_epoch,
            max_points=max_points,
            x_min=x_min,
            x_max=x_max,
        )
        assert got == strict_json(ser_json(want)), (x_min, x_max, max_points)
    live = get_json(client, f"{url}&max_points=30&after_epoch=3")["series"]["loss"]
    later = [r for r in rows if r[0] > 3]
    want = ser.build(later, batches=True, steps_per_epoch=steps_per_epoch, max_points=30)
    assert live == strict_json(ser_json(want))


def ser_json(series):
    from tracker.ui.api import dumps

    return dumps(series.to_json())


def test_batch_series_of_every_key_when_none_is_named(store, client):
    """No key: every key the run has batch points of (what a run's first epoch shows)."""
    run_id = seed_awkward_batches(store, None)
    got = get_json(client, f"/api/runs/{run_id}/series?batches=1&max_points=30")["series"]
    assert list(got) == ["loss"] and got["loss"]["total"] == 1451


def test_batch_blocks_follow_discarded_epochs_and_deleted_runs(store, client):
    run_id = seed_awkward_batches(store, None)
    store.discard_epochs(run_id, 4)
    rows = store.metric_series(run_id, ["loss"], all_rows, batches=True)[1]["loss"]
    got = get_json(client, f"/api/runs/{run_id}/series?key=loss&batches=1&max_points=30")
    want = ser.build(rows, batches=True, steps_per_epoch=None, max_points=30)
    assert got["series"]["loss"] == strict_json(ser_json(want))
    assert max(got["series"]["loss"]["epoch"]) == 3
    store.delete_runs([run_id])
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM batch_blocks").scalar() == 0


def test_series_epoch_level_and_export(store, client):
    ids = seed_three(store)
    data = get_json(client, "/api/runs/run-c/series?key=val_loss")
    assert data["series"]["val_loss"] == {
        "x": [0.0, 1.0],
        "epoch": [0, 1],
        "step": None,
        "value": [0.7, "NaN"],
        "total": 2,
        "shown": 2,
    }
    seed_batches(store)
    whole = get_json(client, "/api/runs/batchy/series?key=loss&batches=1&format=json")
    assert whole["series"]["loss"]["shown"] == 2000
    csv = client.get("/api/runs/batchy/series.csv?key=loss&batches=1")
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0] == "key,epoch,step,x,value" and len(lines) == 2001
    assert client.get(f"/api/runs/{ids['c']}/series.csv").text.count("NaN") == 1


# -- the downsampling itself (pure) ---------------------------------------------------------------


def test_downsample_keeps_everything_that_fits():
    assert ser.downsample([0, 1, 2], [3.0, 1.0, 2.0], 800) == [0, 1, 2]


def test_downsample_keeps_global_min_max_and_last():
    rng = random.Random(0)
    n = 100_000
    x = [i / 100 for i in range(n)]
    y: list[float | None] = [rng.random() for _ in range(n)]
    y[123], y[98765], y[5000] = 5.0, -5.0, None
    idx = ser.downsample(x, y, 600)
    assert len(idx) <= 600 and idx == sorted(set(idx))
    assert {123, 98765, n - 1} <= set(idx)


def test_downsample_nan_is_never_min_or_max_but_can_be_last():
    x = [float(i) for i in range(10)]
    y = [None, 1.0, None, 2.0, 0.5, None, 3.0, None, 4.0, None]
    assert ser.downsample(x, y, 3) == [4, 8, 9]


def test_batch_x_uses_steps_per_epoch_or_the_epochs_last_step():
    assert ser.batch_x([0, 0, 1], [0, 2, 1], 4) == [0.0, 0.5, 1.25]
    assert ser.batch_x([0, 0, 1, 1], [0, 1, 0, 3], None) == [0.0, 0.5, 1.0, 1.75]


# -- errors and methods ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "status", "says"),
    [
        ("/api/runs/nope", 404, "no run matches 'nope'"),
        ("/api/runs/nope/series", 404, "no run matches"),
        ("/api/runs?status=sleeping", 400, "status must be one of"),
        ("/api/runs?limit=x", 400, "limit must be an integer"),
        ("/api/runs?since=yesterday", 400, "since must be"),
        ("/api/runs?sort=val_los", 400, "no metric 'val_los'"),
        ("/api/runs?tag=team", 400, "tag must be KEY=VALUE"),
        ("/api/runs/run-a/series?key=nope", 400, "no metric 'nope'"),
        ("/api/runs/run-a/series?key=loss&batches=1", 400, "no metric 'loss' at batch level"),
        ("/api/runs/nope/series?batches=1", 404, "no run matches"),
        ("/api/runs/run-a/series?x_min=nan", 400, "x_min must be a finite number"),
        ("/api/compare?run=run-a", 400, "at least two runs"),
        ("/api/best?metric=val_los", 400, "no metric"),
        ("/api/nothing", 404, "Not Found"),
    ],
)
def test_errors_are_one_line_json(store, client, url, status, says):
    seed_three(store)
    data = get_json(client, url, status)
    assert list(data) == ["error"] and says in data["error"] and "\n" not in data["error"]


def test_a_run_without_its_epoch_history(store, client):
    """What the charts ask for: the run as `runs show` gives it, its `epochs` array left out
    (the series endpoint carries the values)."""
    seed_three(store)
    whole = get_json(client, "/api/runs/run-a")
    light = get_json(client, "/api/runs/run-a?epochs=0")
    assert whole["epochs"] and light["epochs"] == []
    assert {**whole, "epochs": []} == light


def test_empty_filter_fields_filter_nothing(store, client):
    """The runs page's form sends every field, the empty ones too."""
    seed_three(store)
    everything = get_json(client, "/api/runs")
    assert get_json(client, "/api/runs?tag=&param=&q=&experiment=") == everything
    assert client.get("/?tag=&param=&q=").status_code == 200


@pytest.mark.parametrize("url", ["/", "/api/runs", "/static/style.css", "/runs/run-a"])
@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_only_get(store, client, url, method):
    seed_three(store)
    assert client.request(method, url).status_code == 405
    assert client.head(url).status_code == 200


@pytest.mark.parametrize("url", ["/", "/runs/run-a", "/api/runs", "/static/app.js", "/nothing"])
def test_security_headers(store, client, url):
    seed_three(store)
    headers = client.get(url).headers
    assert "script-src" not in headers["content-security-policy"]  # default-src 'self' only
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


# -- the token ------------------------------------------------------------------------------------


@pytest.fixture
def guarded(ro_store):
    with TestClient(create_app(ro_store, token="s3cret")) as c:
        yield c


def test_token_refused_without_it_or_wrong(store, guarded):
    for url in ("/", "/api/runs", "/static/style.css", "/?token=wrong"):
        r = guarded.get(url, follow_redirects=False)
        assert r.status_code == 401 and "\n" not in r.text.strip()
    guarded.cookies.set("tracker_token", "wrong")
    assert guarded.get("/api/runs").status_code == 401


def test_token_in_url_becomes_a_cookie(store, guarded):
    r = guarded.get("/api/runs?limit=5&token=s3cret", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/api/runs?limit=5"
    cookie = r.headers["set-cookie"]
    assert "tracker_token=s3cret" in cookie and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert guarded.get("/api/runs").status_code == 200  # the cookie alone


@pytest.mark.parametrize(
    ("host", "status"),
    [("localhost:5000", 200), ("127.0.0.1", 200), ("[::1]:80", 200), ("evil.example:5000", 400)],
)
def test_without_a_token_only_loopback_host_names(store, client, host, status):
    assert client.get("/api/runs", headers={"Host": host}).status_code == status


def test_with_a_token_any_host_name(store, guarded):
    r = guarded.get(
        "/api/runs?token=s3cret", headers={"Host": "box.lan:5000"}, follow_redirects=False
    )
    assert r.status_code == 303


# -- read-only, escaping, imports -----------------------------------------------------------------


def every_url(ids):
    return [
        "/",
        "/?sort=name&hide_constant=1&metric=accuracy",
        "/runs/run-a",
        f"/compare?run={ids['a']}&run={ids['b']}&all=1",
        "/api/runs",
        "/api/runs/run-a",
        "/api/runs/run-a/series",
        "/api/runs/run-a/series.csv",
        "/api/best",
        "/api/compare?run=run-a&run=run-c",
        "/static/style.css",
    ]


def test_never_writes_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/ro.db"
    with open_store(url) as s:
        ids = seed_three(s)
    db = tmp_path / "ro.db"
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    with open_read_only(url) as s, TestClient(create_app(s), base_url=LOCAL) as c:
        for u in every_url(ids):
            assert c.get(u).status_code == 200, u
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before


def test_read_only_urls():
    lite = make_url(read_only_url("sqlite:////x/t.db"))
    assert lite.database == "file:/x/t.db" and dict(lite.query) == {"mode": "ro", "uri": "true"}
    pg = make_url(read_only_url("postgresql+psycopg://u@h/db?options=-csearch_path%3Ds"))
    assert pg.query["options"] == "-csearch_path=s -c default_transaction_read_only=on"


def test_read_only_store_refuses_writes(store, ro_store):
    seed_three(store)
    with pytest.raises(Exception, match="(?i)read.?only"):
        ro_store.set_tags("run-a", {"k": "v"})
    assert ro_store.get_run("run-a").tags == {"team": "x"}


def test_pages_render_for_every_url(store, client):
    ids = seed_three(store)
    for u in every_url(ids)[:4]:
        r = client.get(u)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


def test_hostile_text_is_shown_as_text(store, client):
    a = seed_run(
        store,
        {"<b>m</b>": [1.0], "val_loss": [0.5]},
        name=HOSTILE,
        params={"<i>p</i>": "<script>x()</script>"},
        tags={"<u>t</u>": "<svg onload=y()>"},
    )
    b = seed_run(store, {"val_loss": [0.4]}, name="plain", params={"<i>p</i>": 2})
    pages = [
        client.get(u).text for u in ("/?metric=<b>m</b>", f"/runs/{a}", f"/compare?run={a}&run={b}")
    ]
    for html in pages:
        assert "<img" not in html and "<script>x" not in html and "<svg" not in html
        assert "<b>m" not in html and "<i>p" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0]
    assert "&lt;svg onload=y()&gt;" in pages[1] and "&lt;b&gt;m&lt;/b&gt;" in pages[1]
    assert "&lt;script&gt;x()&lt;/script&gt;" in pages[2]


def test_pages_hold_no_inline_script(store, client):
    ids = seed_three(store)
    html = client.get(f"/runs/{ids['a']}").text
    assert html.count("<script") == html.count('<script src="/static/')
    assert f"data-runs='[\"{ids['a']}\"]'" in html and 'data-live="false"' in html


def test_runs_page_keeps_every_filter_in_its_form(store, client):
    seed_three(store)
    html = client.get("/?tag=team=x&tag=a=b&param=units=32&q=run&sort=name&order=desc").text
    for value in ("team=x", "a=b", "units=32"):
        assert f'value="{value}"' in html
    assert 'name="sort" value="name"' in html and 'name="order" value="desc"' in html


def test_runs_page_pages_sorts_and_hides_constant_columns(store, client):
    seed_many(store)
    html = client.get("/?limit=3&offset=3&sort=name").text
    assert "4–6 of 7 runs" in html
    assert 'href="?limit=3&amp;sort=name&amp;offset=0" rel="prev"' in html
    assert 'href="?limit=3&amp;sort=name&amp;offset=6" rel="next"' in html
    assert 'href="?limit=3&amp;sort=name&amp;order=asc"' in html  # the sorted header flips
    assert html.count("<tr data-run-id=") == 3
    hidden = client.get("/?hide_constant=1").text
    assert '<th class="param">i</th>' in hidden and ">experiment</a>" not in hidden
    assert ">experiment</a>" in client.get("/").text


def test_unknown_run_page_is_404(store, client):
    r = client.get("/runs/nope")
    assert r.status_code == 404 and "no run matches" in r.text


def test_tracker_help_does_not_import_the_ui():
    code = "import sys; from tracker.cli.main import cli\n"
    code += "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
    code += "print(sorted(m for m in ('starlette', 'uvicorn', 'jinja2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- the command ----------------------------------------------------------------------------------


def test_ui_missing_database_is_one_line(tmp_path):
    result = run(str(tmp_path / "none.db"), "ui")
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: no database at {tmp_path / 'none.db'}: give --db or $TRACKER_DB_URL\n"
    )


def test_ui_empty_database_is_one_line(tmp_path):
    (tmp_path / "empty.db").touch()
    result = run(str(tmp_path / "empty.db"), "ui")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "holds no tracker runs yet" in result.stderr
    assert (tmp_path / "empty.db").stat().st_size == 0


def test_ui_sqlite_not_in_wal_mode_is_one_line(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with open_store(f"sqlite:///{path}"):
        pass
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA journal_mode = DELETE")
    result = run(str(path), "ui")
    assert result.exit_code == 1 and "is not in WAL mode" in result.stderr


@pytest.mark.parametrize(("host", "token"), [("127.0.0.1", None), ("0.0.0.0", "generated")])
def test_ui_token_only_off_loopback(tmp_path, monkeypatch, host, token):
    import uvicorn

    url = f"sqlite:///{tmp_path}/t.db"
    open_store(url).close()
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    monkeypatch.delenv("TRACKER_UI_TOKEN", raising=False)
    result = run(url, "ui", "--host", host, "--port", "5999")
    assert result.exit_code == 0 and served["host"] == host and served["port"] == 5999
    printed = "?token=" in result.stderr
    assert printed == (token is not None)
    c = TestClient(served["app"], base_url=LOCAL)
    assert c.get("/api/runs").status_code == (401 if token else 200)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_until_ctrl_c_then_stops_cleanly(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    open_store(url).close()
    port = free_port()
    cmd = [sys.executable, "-c", "from tracker.cli.main import cli; cli()", "--db", url, "ui"]
    proc = subprocess.Popen([*cmd, "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs") as r:
                    assert r.status == 200
                break
            except OSError:
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert err.endswith("Stopped.\n") and "Traceback" not in err


def test_nonfinite_numbers_by_name(store, client):
    seed_run(store, {"val_loss": [math.inf, 0.5]}, name="inf")
    data = get_json(client, "/api/runs/inf")
    assert data["epochs"][0]["metrics"]["val_loss"] == "Infinity"
