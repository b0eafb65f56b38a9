"""`tracker compare`: runs side by side (params, metric best/last, stop reasons, curves).

Curves share one scale per metric in the sparklines, so runs can be compared by eye (the
`--plot` image file is drawn by `tracker.cli.plot`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from tracker.modes import infer_mode
from tracker.present.output import Table, View, sparkline
from tracker.present.views import LR_KEY, epoch_table, stop
from tracker.records import RunDetail
from tracker.values import fmt_float

_MISSING = object()
# What the runs ran on, side by side: the Keras backend and the versions that make it.
ENVIRONMENT_KEYS = ("backend", "keras", "tensorflow", "jax", "torch", "python")


def default_metrics(details: list[RunDetail]) -> list[str]:
    """Every epoch metric any of the runs recorded, except the learning rate and the epoch's
    wall time (machine noise, not a result; both can still be asked for with --metric)."""
    return sorted({k for d in details for k in d.summaries} - {LR_KEY, "epoch_time_s"})


def compare(
    details: list[RunDetail], metrics: list[str], *, all_params: bool, sparklines: bool
) -> View:
    """JSON: `runs` (each run's id, name, experiment, status, stop_reason, epochs and `stop`),
    `params` (`{"key", "changed", "values": {run_id: value}}`, changed ones first; unchanged ones
    only with `all_params`; a run without the param is left out of `values`), `metrics`
    (`{"key", "mode", "runs": {run_id: {"best", "best_epoch", "last", "last_epoch"}}}`; `best` is
    null when the direction of the metric cannot be told from its name) and `curves`
    (`{"metric", "run_id", "epochs": [...], "values": [...]}`); `environment` (`{"key",
    "changed", "values": {run_id: value}}` for the backend and the versions of Keras, its
    backends and Python, each recorded by some run)."""
    params = _params(details, all_params)
    summary = _metric_summary(details, metrics)
    curves = _curves(details, metrics)
    environment = _environment(details)
    data = {
        "runs": [_run_json(d) for d in details],
        "params": params,
        "metrics": summary,
        "curves": curves,
        "environment": environment,
    }
    sections: list[Table | str] = [
        _params_table(details, params, all_params),
        _environment_table(details, environment),
        _metrics_table(details, summary),
        _stop_table(details),
        _epochs_table(details, metrics),
    ]
    if sparklines:
        sections.append(_sparklines(details, curves))
    return View(data, sections, _csv(details, params, summary))


def _run_json(d: RunDetail) -> dict[str, Any]:
    r = d.run
    return {
        "id": r.id,
        "name": r.name,
        "experiment": r.experiment,
        "status": r.status,
        "stop_reason": r.stop_reason,
        "epochs": r.epochs_done,
        "stop": stop(r),
    }


def _params(details: list[RunDetail], all_params: bool) -> list[dict[str, Any]]:
    keys = sorted({k for d in details for k in d.run.params})
    out = []
    for key in keys:
        values = {d.run.id: d.run.params[key] for d in details if key in d.run.params}
        seen = {json.dumps(v, sort_keys=True, default=str) for v in values.values()}
        changed = len(seen) > 1 or len(values) < len(details)
        if changed or all_params:
            out.append({"key": key, "changed": changed, "values": values})
    out.sort(key=lambda p: not p["changed"])
    return out


def _environment(details: list[RunDetail]) -> list[dict[str, Any]]:
    out = []
    for key in ENVIRONMENT_KEYS:
        values = {d.run.id: d.run.environment.get(key) for d in details}
        if any(v is not None for v in values.values()):
            changed = len(set(map(str, values.values()))) > 1
            out.append({"key": key, "changed": changed, "values": values})
    return out


def _metric_summary(details: list[RunDetail], metrics: list[str]) -> list[dict[str, Any]]:
    out = []
    for key in metrics:
        mode = infer_mode(key)
        runs = {}
        for d in details:
            s = d.summaries.get(key)
            if s is None:
                continue
            value, epoch = s.best(mode) if mode else (None, None)
            runs[d.run.id] = {
                "best": value,
                "best_epoch": epoch,
                "last": s.last_value,
                "last_epoch": s.last_epoch,
            }
        out.append({"key": key, "mode": mode, "runs": runs})
    return out


def _curves(details: list[RunDetail], metrics: list[str]) -> list[dict[str, Any]]:
    out = []
    for key in metrics:
        for d in details:
            points = [p for p in d.history if p.key == key]
            if points:
                out.append(
                    {
                        "metric": key,
                        "run_id": d.run.id,
                        "epochs": [p.epoch for p in points],
                        "values": [p.value for p in points],
                    }
                )
    return out


# -- table sections -----------------------------------------------------------------------------


def _names(details: list[RunDetail]) -> list[str]:
    return [d.run.label for d in details]


def _params_table(details: list[RunDetail], params: list[dict[str, Any]], all_: bool) -> Table:
    rows = [[p["key"], *(p["values"].get(d.run.id, _MISSING) for d in details)] for p in params]
    rows = [[("(unset)" if v is _MISSING else v) for v in row] for row in rows]
    title = "Params" if all_ else "Params that differ (--all for every one)"
    return Table(["param", *_names(details)], rows, title)


def _environment_table(details: list[RunDetail], environment: list[dict[str, Any]]) -> Table:
    rows = [
        [e["key"], *("-" if (v := e["values"][d.run.id]) is None else v for d in details)]
        for e in environment
    ]
    return Table(["environment", *_names(details)], rows, "Ran on")


def _at(value: float | None, epoch: int | None) -> str:
    return "-" if value is None or epoch is None else f"{fmt_float(value)} @{epoch}"


def _metrics_table(details: list[RunDetail], summary: list[dict[str, Any]]) -> Table:
    rows = []
    for m in summary:
        for stat in ("best", "last"):
            if stat == "best" and m["mode"] is None:
                continue
            label = f"{stat} ({m['mode']})" if stat == "best" else stat
            cells = [m["runs"].get(d.run.id) for d in details]
            rows.append(
                [m["key"], label, *(_at(c[stat], c[f"{stat}_epoch"]) if c else "-" for c in cells)]
            )
    return Table(["metric", "", *_names(details)], rows, "Metrics (value @epoch)")


def _stop_table(details: list[RunDetail]) -> Table:
    columns = ["run", "status", "stop", "epoch", "monitor", "best_epoch", "restored_epoch"]
    rows = []
    for name, d in zip(_names(details), details, strict=True):
        st = stop(d.run)
        rows.append([name, d.run.status, *(st.get(k) for k in ("reason", *columns[3:]))])
    return Table(columns, rows, "Stop")


def _epochs_table(details: list[RunDetail], metrics: list[str]) -> Table:
    columns, per_run = ["epoch"], []
    for d in details:
        per_run.append(dict(epoch_table(p for p in d.history if p.key in metrics)[1]))
    wanted = [(m, i) for m in metrics for i, d in enumerate(details) if m in d.summaries]
    columns += [f"{m} [{details[i].run.name}]" for m, i in wanted]
    epochs = sorted({e for rows in per_run for e in rows})
    rows = [[e, *(per_run[i].get(e, {}).get(m) for m, i in wanted)] for e in epochs]
    return Table(columns, rows, "Epochs")


def _sparklines(details: list[RunDetail], curves: list[dict[str, Any]]) -> str:
    names = dict(zip((d.run.id for d in details), _names(details), strict=True))
    width = max(len(n) for n in names.values())
    lines = []
    for metric in dict.fromkeys(c["metric"] for c in curves):
        mine = [c for c in curves if c["metric"] == metric]
        finite = [v for c in mine for v in c["values"] if math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        lines.append(f"{metric}  (scale {fmt_float(lo)} .. {fmt_float(hi)})")
        for c in mine:
            line = sparkline(c["values"], lo, hi)
            ends = f"{fmt_float(c['values'][0])} -> {fmt_float(c['values'][-1])}"
            lines.append(f"  {names[c['run_id']].ljust(width)}  {line}  {ends}")
    return "Curves\n" + "\n".join(lines) if lines else ""


def _csv(
    details: list[RunDetail], params: list[dict[str, Any]], summary: list[dict[str, Any]]
) -> Table:
    """One row per run: its facts, the shown params, then each metric's best/last and epochs."""
    stats = ("best", "best_epoch", "last", "last_epoch")
    columns = ["run_id", "name", "experiment", "status", "stop_reason", "epochs"]
    columns += [f"param:{p['key']}" for p in params]
    columns += [f"{m['key']}:{s}" for m in summary for s in stats]
    rows = []
    for d in details:
        r = d.run
        row: list[Any] = [r.id, r.name, r.experiment, r.status, r.stop_reason, r.epochs_done]
        row += [p["values"].get(r.id) for p in params]
        row += [(m["runs"].get(r.id) or {}).get(s) for m in summary for s in stats]
        rows.append(row)
    return Table(columns, rows)
