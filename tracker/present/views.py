"""What each CLI command shows, built from the store's records (no database access here).

Every function returns an `output.View`: the JSON contract of the command (its keys are listed in
the function's docstring and the command's help), the sections of its table output and the table
its CSV holds. Epochs are numbered as Keras passes them to callbacks, from 0, everywhere: in
tables, JSON, `--epoch` and `restore`.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker.config import shown
from tracker.present.output import Table, View, fmt_duration, key_values
from tracker.records import (
    CheckpointRecord,
    MetricPoint,
    RankedRun,
    RunDetail,
    RunRecord,
    json_float,
)
from tracker.store import revisions
from tracker.values import fmt_float

if TYPE_CHECKING:
    from tracker.restore import Choice

LR_KEY = "lr"
_STOP_KEYS = (
    "monitor",
    "patience",
    "min_delta",
    "mode",
    "baseline",
    "start_from_epoch",
    "restore_best_weights",
    "best",
    "best_epoch",
    "stopped_epoch",
    "restored_epoch",
)


# -- runs list / best ---------------------------------------------------------------------------


def runs_list(ranked: list[RankedRun]) -> View:
    """`runs list`: each run's JSON (`RunRecord.to_json()`) plus `metric`, `mode`, `agg`, and the
    run's best (or, with `--agg last`, last) `value` of that metric and the `epoch` it came at."""
    data = [{**r.run.to_json(), **_shown_metric(r)} for r in ranked]
    metric = next((r.metric for r in ranked if r.metric), "")
    label = f"{ranked[0].agg} {metric}" if metric else "metric"
    columns = ["id", "name", "experiment", "status", "stop", "epochs", label, "epoch"]
    rows = [
        [
            r.run.short_id,
            r.run.name,
            r.run.experiment,
            r.run.status,
            r.run.stop_reason,
            _epochs(r.run),
            r.value,
            r.epoch,
            r.run.started_at,
            fmt_duration(r.run.duration_s),
        ]
        for r in ranked
    ]
    csv_columns = [
        "id",
        "name",
        "experiment",
        "status",
        "stop_reason",
        "epochs",
        "epochs_planned",
        "started_at",
        "ended_at",
        "duration_s",
        "metric",
        "agg",
        "value",
        "epoch",
    ]
    csv_rows = [[row.get(c) for c in csv_columns] for row in data]
    return View(
        data,
        [Table([*columns, "started", "duration"], rows)],
        Table(csv_columns, csv_rows),
    )


def _shown_metric(r: RankedRun) -> dict[str, Any]:
    return {
        "metric": r.metric or None,
        "mode": r.mode or None,
        "agg": r.agg,
        "value": json_float(r.value),
        "epoch": r.epoch,
    }


def _epochs(run: RunRecord) -> str:
    return f"{run.epochs_done}/{run.epochs_planned}" if run.epochs_planned else str(run.epochs_done)


def best(ranked: list[RankedRun], *, as_list: bool) -> View:
    """`best`: `RankedRun.to_json()` objects; one object unless a `--top` was asked for."""
    data: Any = [r.to_json() for r in ranked]
    columns = ["rank", "run_id", "run_name", "experiment", "metric", "mode", "agg"]
    columns += ["epoch", "value"]
    rows = [
        [n, r.run.short_id, r.run.name, r.run.experiment, r.metric, r.mode, r.agg, r.epoch, r.value]
        for n, r in enumerate(ranked, 1)
    ]
    csv_rows = [[n, *(d[c] for c in columns[1:])] for n, d in enumerate(data, 1)]
    return View(data if as_list else data[0], [Table(columns, rows)], Table(columns, csv_rows))


# -- runs show ----------------------------------------------------------------------------------


def run_show(detail: RunDetail, places: list[tuple[str, str]]) -> View:
    """`runs show`: the run's JSON with `epochs` as the per-epoch history (the count is in
    `epochs_done`), and `fit_params`, `environment`, `model`, `references`, `stop`, `summaries`
    and `checkpoints` (each with its `state` on disk now: ok, missing or modified, and where it
    can be had: `available` is local, store, both or neither). `places` holds those two for
    each checkpoint (`artifacts.checkpoint_places`: finding them reads the files, so the caller
    does, and this only shapes data)."""
    run = detail.run
    states = [st for st, _ in places]
    where = [w for _, w in places]
    keys, epochs = epoch_table(detail.history)
    keys.sort(key=lambda k: k == LR_KEY)  # the learning rate after the metrics
    data = {
        **run.to_json(),
        "epochs": [_epoch_json(e, values) for e, values in epochs],
        "epochs_done": run.epochs_done,
        "last_epoch": run.last_epoch,
        "fit_params": run.fit_params,
        "environment": run.environment,
        "model": run.model,
        "references": run.references,
        "stop": stop(run),
        "summaries": {k: s.to_json() for k, s in detail.summaries.items()},
        "checkpoints": [
            {**c.to_json(st), "available": w}
            for c, st, w in zip(detail.checkpoints, states, where, strict=True)
        ],
    }
    epoch_rows = Table(["epoch", *keys], [[e, *(v.get(k) for k in keys)] for e, v in epochs])
    sections: list[Table | str] = [
        _overview(run),
        key_values("Params", run.params),
        key_values("Tags", run.tags),
        key_values("Fit params", run.fit_params),
        key_values("Environment", run.environment),
        *_model_sections(run.model),
        key_values("Stop", {k: v for k, v in data["stop"].items() if v is not None}, sort=False),
        Table(epoch_rows.columns, epoch_rows.rows, "Epochs"),
        _checkpoint_table(detail.checkpoints, states, where),
        _references_table(run.references),
    ]
    return View(data, sections, epoch_rows)


def _overview(run: RunRecord) -> Table:
    facts = {
        "id": run.id,
        "experiment": run.experiment,
        "status": run.status,
        "stop reason": run.stop_reason,
        "epochs": _epochs(run),
        "started": run.started_at,
        "ended": run.ended_at,
        "duration": fmt_duration(run.duration_s),
    }
    return Table(["key", "value"], [[k, v] for k, v in facts.items()], f"Run {run.name}", False)


def _model_sections(model: dict[str, Any]) -> list[Table | str]:
    if not model:
        return [key_values("Model", {})]
    facts = {k: v for k, v in model.items() if k not in ("summary", "architecture", "layers")}
    out: list[Table | str] = [key_values("Model", facts)]
    if model.get("layers"):
        out.append(_layer_table(model["layers"]))
    elif model.get("summary"):  # runs recorded before the layer list: Keras's own text
        out.append(str(model["summary"]).rstrip())
    return out


def _layer_table(layers: list[dict[str, Any]]) -> Table:
    rows = []
    for layer in layers:
        shape = layer.get("output_shape")
        shape_text = "?" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"
        if shape is not None and len(shape) == 1:
            shape_text = shape_text[:-1] + ",)"
        params = layer.get("params")
        rows.append(
            [
                f"{layer.get('name')} ({layer.get('class')})",
                shape_text,
                "?" if params is None else f"{params:,}",
                "yes" if layer.get("trainable", True) else "no",
            ]
        )
    return Table(["layer (type)", "output shape", "params", "trainable"], rows, "Layers")


def stop(run: RunRecord) -> dict[str, Any]:
    """Why the run stopped, flat: `reason`, `epoch` (the last epoch run unless the details say
    otherwise), the details' own keys and, for early stopping, the EarlyStopping settings and
    outcome (`monitor`, `patience`, `best`, `best_epoch`, `restored_epoch`, ...)."""
    details = dict(run.stop_details)
    es = details.pop("early_stopping", None) or {}
    out: dict[str, Any] = {"reason": run.stop_reason, "epoch": run.last_epoch, **details}
    if es:
        for key in _STOP_KEYS:
            out.setdefault(key, es.get(key))
        for key, value in es.items():
            out.setdefault(key, value)
    return out


def _checkpoint_table(cks: list[CheckpointRecord], states: list[str], where: list[str]) -> Table:
    columns = ["epoch", "state", "available", "kind", "source", "monitor", "value", "best"]
    columns += ["size", "sha256"]
    rows = [
        [
            c.epoch,
            _state_label(c, st, cks, states),
            w,
            c.kind,
            c.source,
            c.monitor,
            c.value,
            c.is_best,
            c.size,
            c.sha256[:12],
        ]
        for c, st, w in zip(cks, states, where, strict=True)
    ]
    paths = [[*r, c.path] for r, c in zip(rows, cks, strict=True)]
    return Table([*columns, "path"], paths, "Checkpoints")


def _state_label(
    ck: CheckpointRecord, state: str, cks: list[CheckpointRecord], states: list[str]
) -> str:
    """`modified` reads like corruption when a later save of the same run simply overwrote the
    file (a fixed ModelCheckpoint path, the callback's best copy): say so in the table."""
    if state != "modified":
        return state
    later = [c for c, st in zip(cks, states, strict=True) if c.path == ck.path and c.id > ck.id]
    return f"overwritten (epoch {later[-1].epoch})" if later else state


def _references_table(refs: list[dict[str, Any]]) -> Table:
    rows = [[r.get("kind"), r.get("path"), _rest(r)] for r in refs]
    return Table(["kind", "path", "details"], rows, "References")


def _rest(ref: dict[str, Any]) -> dict[str, Any] | None:
    rest = {k: v for k, v in ref.items() if k not in ("kind", "path")}
    return rest or None


# -- metric histories ---------------------------------------------------------------------------


def epoch_table(
    points: Iterable[MetricPoint], *, batches: bool = False
) -> tuple[list[str], list[tuple[Any, dict[str, float]]]]:
    """Points pivoted to rows: the keys (sorted) and `(epoch, {key: value})` rows, or
    `((epoch, step), {...})` with `batches`."""
    keys: dict[str, None] = {}
    rows: dict[Any, dict[str, float]] = {}
    for p in points:
        keys.setdefault(p.key, None)
        rows.setdefault((p.epoch, p.step) if batches else p.epoch, {})[p.key] = p.value
    return sorted(keys), list(rows.items())


def _epoch_json(epoch: int, values: dict[str, float]) -> dict[str, Any]:
    metrics = {k: json_float(v) for k, v in values.items() if k != LR_KEY}
    return {"epoch": epoch, "metrics": metrics, "lr": json_float(values.get(LR_KEY))}


def metrics(run: RunRecord, points: list[MetricPoint], *, batches: bool) -> View:
    """`metrics`: an array of `{"epoch", "metrics": {key: value}}` rows (with `"step"`, the
    batch index, under `--batches`); `lr` is an ordinary key here."""
    keys, rows = epoch_table(points, batches=batches)
    lead = ["epoch", "step"] if batches else ["epoch"]
    data = []
    table_rows = []
    for at, values in rows:
        index = list(at) if batches else [at]
        data.append({**dict(zip(lead, index, strict=True)), "metrics": values})
        table_rows.append([*index, *(values.get(k) for k in keys)])
    table = Table([*lead, *keys], table_rows)
    return View(data, [Table(table.columns, table.rows, f"Run {run.label}")], table)


# -- restore ------------------------------------------------------------------------------------


def restored(
    run: RunRecord, ck: CheckpointRecord, to: Path, choice: Choice, source: str | None = None
) -> str:
    at = f"epoch {ck.epoch}" + (f" batch {ck.batch}" if ck.batch is not None else "")
    if choice.metric and choice.value is not None:
        at += f" ({choice.metric} {fmt_float(choice.value)})"
    lines = [f"Restored run {run.label} {at}: {ck.kind} from {ck.source}"]
    if choice.missed:
        lines.append(f"  note   {choice.missed}")
    lines += [
        f"  from   {source or ck.path}",
        f"  to     {to}",
        f"  sha256 {ck.sha256[:16]}... ({ck.size} bytes, verified)",
    ]
    return "\n".join(lines)


def restore_command(run: RunRecord, ck: CheckpointRecord) -> str:
    """The `tracker restore` command that copies out this checkpoint, to a file of its own
    name (whose suffix fits the checkpoint's format, as `restore` requires)."""
    args = ["tracker", "restore", run.id]
    if ck.epoch is not None:
        args += ["--epoch", str(ck.epoch)]
    if ck.batch is not None:
        args += ["--batch", str(ck.batch)]
    args += ["--to", Path(ck.path).name]
    return " ".join(shlex.quote(a) for a in args)


# -- small messages -----------------------------------------------------------------------------


def run_names(runs: list[RunRecord]) -> str:
    shown = ", ".join(r.label for r in runs[:10])
    more = f" and {len(runs) - 10} more" if len(runs) > 10 else ""
    return f"{len(runs)} run{'s' if len(runs) != 1 else ''}: {shown}{more}"


def store_names(roots: dict[str, set[str]]) -> str:
    """The artifact stores a deletion reaches, masked, for its question."""
    found = sorted({shown(root) for rs in roots.values() for root in rs})
    return "the artifact store " + ", ".join(found)


def format_tags(tags: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in tags.items())


# -- db -----------------------------------------------------------------------------------------


def db_status(url: str, revision: str | None) -> View:
    """`db current`: JSON {"url", "revision", "head", "is_head"}."""
    head = revisions.HEAD
    data = {"url": url, "revision": revision, "head": head, "is_head": revision == head}
    if revision == head:
        line = f"{revision} (head)"
    elif revision is None:
        line = "none: empty database (run `tracker db upgrade`)"
    elif revision in revisions.KNOWN_REVISIONS:
        line = f"{revision} (not head: head is {head}; run `tracker db upgrade`)"
    else:
        line = f"{revision} (unknown to this tracker, whose head is {head}: upgrade tracker)"
    table = Table(list(data), [list(data.values())])
    return View(data, [f"{url}\n{line}"], table)


def upgraded(url: str, before: str | None, after: str | None) -> str:
    if before == after:
        return f"{url}: already at {after} (head)"
    return f"{url}: upgraded from {before or 'empty'} to {after} (head)"


def downgraded(url: str, before: str | None, after: str | None) -> str:
    return f"{url}: downgraded from {before or 'empty'} to {after or 'base (no tables)'}"
