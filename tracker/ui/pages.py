"""The three HTML pages, rendered on the server from the API's own data (`tracker.ui.api`).

All state is in the URL's query string, so reload, back/forward and a copied link show the same
view. Jinja2 escapes every value (autoescape on for every template, whatever its name): run
names, params, tags and error messages are text from users, shown as text. No page holds an
inline script; what the scripts need is in data-* attributes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from tracker.errors import TrackerError
from tracker.modes import infer_mode
from tracker.present.output import cell, flatten, fmt_duration
from tracker.store.queries import STATUSES
from tracker.ui import api
from tracker.values import fmt_float

STOP_REASONS = (
    "completed",
    "early_stopping",
    "terminate_on_nan",
    "stopped_by_callback",
    "interrupted",
    "error",
    "crashed",
)
COLUMNS = [  # the runs table's fixed columns: (sort key or None, label)
    ("name", "name"),
    ("experiment", "experiment"),
    ("status", "status"),
    ("stop_reason", "stop"),
    ("epochs", "epochs"),
    ("started_at", "started"),
    (None, "duration"),
]


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):  # "NaN", "Infinity" from the JSON contract
        return {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}.get(value, value)
    return fmt_float(float(value))


def _at(v: dict[str, Any] | None) -> str:
    """A metric cell: "0.312 @ e17"."""
    if not v or v.get("value") is None:
        return "-"
    return f"{_number(v['value'])} @ e{v['epoch']}"


def _when(text: str | None) -> str:
    if not text:
        return "-"
    return datetime.fromisoformat(text).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    return fmt_duration(seconds)


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("tracker.ui", "templates"),
        autoescape=True,  # every template, not only *.html: all shown text is the users'
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(number=_number, at=_at, when=_when, duration=_duration, cell=cell)
    return env


ENV = _env()


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(ENV.get_template(name).render(**context), status)


def error_page(e: TrackerError) -> Response:
    return render("error.html", api.status_of(e), title="Error", message=str(e).splitlines()[0])


def url_with(q: QueryParams, **changes: Any) -> str:
    """The query string of `q` with `changes` (a list sets a repeated key, None removes it)."""
    items = [(k, v) for k, v in q.multi_items() if k not in changes]
    for key, value in changes.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        items += [(key, str(v)) for v in values]
    return "?" + urlencode(items) if items else "?"


# -- runs ---------------------------------------------------------------------------------------


def runs_page(request: Request) -> Response:
    q = request.query_params
    try:
        query = api.RunsQuery.parse(q)
        data = api.runs_data(api.store_of(request), query)
    except TrackerError as e:
        return error_page(e)
    param_keys = sorted({k for r in data["runs"] for k in r["params"]})
    hidden = set()
    if q.get("hide_constant"):
        hidden = _constant_columns(data["runs"], param_keys)
    return render(
        "runs.html",
        title="Runs",
        q=q,
        query=query,
        data=data,
        columns=[c for c in COLUMNS if c[1] not in hidden],
        param_keys=[k for k in param_keys if f"param:{k}" not in hidden],
        statuses=STATUSES,
        stop_reasons=STOP_REASONS,
        url_with=url_with,
        sort_link=lambda key: _sort_link(q, query, key),
        page_links=_page_links(q, data),
    )


def _constant_columns(rows: list[dict[str, Any]], param_keys: list[str]) -> set[str]:
    """Columns whose value is the same in every row shown (2+ rows): "hide constant columns"."""
    if len(rows) < 2:
        return set()
    out = {
        label
        for key, label in (("experiment", "experiment"), ("status", "status"))
        if len({r[key] for r in rows}) == 1
    }
    if len({r["stop_reason"] for r in rows}) == 1:
        out.add("stop")
    for key in param_keys:
        if len({cell(r["params"].get(key, "\0unset")) for r in rows}) == 1:
            out.add(f"param:{key}")
    return out


def _sort_link(q: QueryParams, query: api.RunsQuery, key: str) -> str:
    """A header's link: sort by `key`, or flip the order when already sorted by it."""
    order = None
    if query.sort == key:
        order = "asc" if query.order != "asc" else "desc"
    return url_with(q, sort=key, order=order, offset=None)


def _page_links(q: QueryParams, data: dict[str, Any]) -> dict[str, str | None]:
    offset, limit, total = data["offset"], data["limit"], data["total"]
    prev = url_with(q, offset=max(0, offset - limit)) if offset > 0 else None
    nxt = url_with(q, offset=offset + limit) if offset + limit < total else None
    return {"prev": prev, "next": nxt}


# -- one run ------------------------------------------------------------------------------------


def run_page(request: Request) -> Response:
    try:
        data = api.run_data(api.store_of(request), request.path_params["ref"])
    except TrackerError as e:
        return error_page(e)
    stop = {k: v for k, v in data["stop"].items() if v is not None and k != "reason"}
    return render(
        "run.html",
        title=data["name"],
        run=data,
        stop=stop,
        best=best_epoch(data),
        fit_params=flatten(data["fit_params"]),
        environment=flatten(data["environment"]),
        model={k: v for k, v in data["model"].items() if k not in ("layers", "architecture")},
        layers=data["model"].get("layers") or [],
        live="true" if data["status"] == "running" else "false",
    )


def best_epoch(run: dict[str, Any]) -> dict[str, Any] | None:
    """The best epoch by the metric the run monitored (EarlyStopping's, else val_loss, else
    loss), in the direction `best` uses: {"metric", "epoch", "value"}."""
    sums = run["summaries"]
    monitor = run["stop"].get("monitor")
    key = next((k for k in (monitor, "val_loss", "loss") if k and k in sums), None)
    if key is None:
        return None
    mode = run["stop"].get("mode") if key == monitor else None
    mode = mode if mode in ("min", "max") else infer_mode(key)
    if mode is None:
        return None
    s = sums[key]
    return {"metric": key, "epoch": s[f"{mode}_epoch"], "value": s[mode]}


# -- compare ------------------------------------------------------------------------------------


def compare_page(request: Request) -> Response:
    try:
        data = api.compare_data(api.store_of(request), request.query_params)
    except TrackerError as e:
        return error_page(e)
    ids = [r["id"] for r in data["runs"]]
    return render(
        "compare.html",
        title="Compare",
        data=data,
        run_ids=ids,
        all_params=request.query_params.get("all") in ("1", "true"),
        q=request.query_params,
        url_with=url_with,
        missing=_Missing(),
    )


class _Missing:
    """The mark of a param a run does not have (distinct from a null value)."""

    def __str__(self) -> str:
        return "(unset)"
