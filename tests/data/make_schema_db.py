"""Make `schema_<rev>.db`: a small real SQLite database at an old schema revision, with runs,
params, tags, metrics (NaN and infinity included, batch points too), summaries and a
checkpoint, written with plain SQL as that revision defined the tables. The upgrade tests copy
it, upgrade it and use it.

    python tests/data/make_schema_db.py 0001            # writes tests/data/schema_0001.db
    python tests/data/make_schema_db.py 0001 --url postgresql+psycopg://...   # same rows, PG
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import create_engine, text

from tracker.store.migrate import upgrade

HERE = Path(__file__).parent
T0 = "2026-01-01 00:00:00"

# (table, rows) as schema 0001 has them; ids fixed so tests can look them up.
RUNS = [
    ("aaaaaaaa000000000000000000000001", "old-best", "finished", "completed"),
    ("bbbbbbbb000000000000000000000002", "old-nan", "failed", "error"),
]
HISTORY = {  # run -> key -> values per epoch (None stands for NaN, as the store keeps it)
    RUNS[0][0]: {"loss": [1.0, 0.5, 0.4], "val_loss": [0.9, 0.3, 0.35]},
    RUNS[1][0]: {"loss": [1.2, None], "val_loss": [float("inf"), 0.8]},
}


# Batch points of old-best's `loss`: (epoch, step, value), NaN (None) and ties included, more
# than one block of steps an epoch, so an upgrade must summarise them exactly.
BATCHES = [
    (e, s, None if s % 37 == 5 else round(((e + 1) * 7919 * (s + 3)) % 101 / 100, 2))
    for e in range(2)
    for s in range(150)
]


def _summary(run_id: str, key: str, values: list) -> dict:
    finite = [(v, e) for e, v in enumerate(values) if v is not None and abs(v) != float("inf")]
    lo = min(finite) if finite else (None, None)
    hi = max(finite) if finite else (None, None)
    return {
        "run_id": run_id,
        "key": key,
        "count": len(values),
        "first_value": values[0],
        "first_epoch": 0,
        "last_value": values[-1],
        "last_epoch": len(values) - 1,
        "min_value": lo[0],
        "min_epoch": lo[1],
        "max_value": hi[0],
        "max_epoch": hi[1],
    }


def _insert(c, table: str, row: dict) -> None:
    cols = ", ".join(f'"{k}"' for k in row)
    c.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({', '.join(':' + k for k in row)})"), row)


def populate(url: str, revision: str) -> None:
    engine = create_engine(url)
    upgrade(engine, revision)
    with engine.begin() as c:
        _insert(c, "experiments", {"name": "legacy", "created_at": T0})
        exp_id = c.execute(text("SELECT id FROM experiments WHERE name = 'legacy'")).scalar()
        for run_id, name, status, reason in RUNS:
            epochs = len(HISTORY[run_id]["loss"])
            _insert(
                c,
                "runs",
                {
                    "id": run_id,
                    "name": name,
                    "experiment_id": exp_id,
                    "status": status,
                    "stop_reason": reason,
                    "stop_details": "{}",
                    "started_at": T0,
                    "ended_at": T0,
                    "heartbeat_at": T0,
                    "heartbeat_deadline": T0,
                    "epochs_planned": 3,
                    "epochs_done": epochs,
                    "last_epoch": epochs - 1,
                    "fit_params": '{"epochs": 3}',
                    "environment": "{}",
                    "model": "{}",
                    "references": "[]",
                },
            )
            _insert(c, "params", {"run_id": run_id, "key": "lr", "value": "0.01"})
            _insert(c, "tags", {"run_id": run_id, "key": "team", "value": "core"})
            for key, values in HISTORY[run_id].items():
                for epoch, value in enumerate(values):
                    _insert(
                        c,
                        "metrics",
                        {
                            "run_id": run_id,
                            "key": key,
                            "epoch": epoch,
                            "step": None,
                            "value": value,
                            "time": T0,
                        },
                    )
                _insert(c, "metric_summaries", _summary(run_id, key, values))
        for epoch, step, value in BATCHES:
            row = {"run_id": RUNS[0][0], "key": "loss", "epoch": epoch, "step": step}
            _insert(c, "metrics", {**row, "value": value, "time": T0})
        _insert(
            c,
            "checkpoints",
            {
                "run_id": RUNS[0][0],
                "epoch": 1,
                "batch": None,
                "path": "/gone/best.weights.h5",
                "kind": "weights",
                "source": "ModelCheckpoint",
                "monitor": "val_loss",
                "value": 0.3,
                "is_best": True,
                "size": 10,
                "sha256": "0" * 64,
                "created_at": T0,
            },
        )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("revision")
    parser.add_argument("--url", help="populate this database instead of the SQLite file")
    args = parser.parse_args()
    if args.url:
        populate(args.url, args.revision)
        return
    out = HERE / f"schema_{args.revision}.db"
    out.unlink(missing_ok=True)
    populate(f"sqlite:///{out}", args.revision)
    print(out)


if __name__ == "__main__":
    main()
