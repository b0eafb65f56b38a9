"""The part of bench/RESULTS.md about benchmark 7, a database on another machine (remote_db.py)."""

from __future__ import annotations

from typing import Any

from report import FIT_OVERHEAD, Lines, get, load, met, ms, pct, row, secs

HOLDUP_S = 0.001  # an epoch's write may hold training up this long (median), at 5 ms each way
TARGET_DELAY = "5.0"


def _delays(b: dict[str, Any]) -> dict[str, Any]:
    return get(b, "remote_db", "postgresql", "delays") or {}


def targets(b: dict[str, Any]) -> Lines:
    d = _delays(b).get(TARGET_DELAY)
    if not d:
        return []
    t = d["tracker"]["tracker_epoch"]
    m = get(d, "mlflow", "mlflow_callback_epoch") or {}
    hold = t["epoch_end_median_s"]
    first = d["tracker"]["first_fit"]["in_hooks"]
    return [
        row(
            "7. end of an epoch holds training up, PostgreSQL +5 ms each way",
            ms(hold),
            ms(m.get("epoch_end_median_s")),
            "–",
            f"≤ {ms(HOLDUP_S)} (median)",
            met(hold <= HOLDUP_S),
        ),
        row(
            "7. fit overhead, PostgreSQL +5 ms each way",
            f"in hooks {pct(t['in_hooks'])} ({pct(first)} in a process's first fit, "
            f"{pct(get(d, 'tracker', 'cold_fit', 'in_hooks'))} in a script's); "
            f"end to end {end_to_end(t)}",
            f"in hooks {pct(m.get('in_hooks'))}; end to end {pct(m.get('overhead'))}",
            "–",
            "≤ 2 % of fit",
            verdict(max(t["in_hooks"], first), t),
        ),
    ]


def end_to_end(t: dict[str, Any] | None) -> str:
    """The median end-to-end overhead, with the interval that holds the true median."""
    if not t:
        return "–"
    low, high = t.get("overhead_interval") or (None, None)
    if low is None:
        return pct(t["overhead"])
    return f"{pct(t['overhead'])} (90 % interval {pct(low)} to {pct(high)})"


def verdict(in_hooks: float, t: dict[str, Any]) -> str:
    """Met when the time in the hooks (a lower bound with little noise) and the end-to-end
    median are both within the target; missed when the hooks alone, or the whole interval of
    the end-to-end median, are over it; else the machine's noise cannot tell."""
    low = (t.get("overhead_interval") or (t["overhead"],))[0]
    if in_hooks > FIT_OVERHEAD or low > FIT_OVERHEAD:
        return met(False)
    if t["overhead"] <= FIT_OVERHEAD:
        return met(True)
    return "**unclear** (in hooks within; end to end within noise of the target)"


def _cores(cpus: dict[str, list[int]] | None) -> str:
    if not cpus or not cpus.get("server_and_link"):
        return (
            "The server, the proxy and the fits shared the machine's cores: the database's own "
            "work competed with training, as it would not on another machine."
        )
    return (
        f"The server and the proxy ran on {_cpu_list(cpus['server_and_link'])}, the fits "
        f"(tracked or not, either tool) on {_cpu_list(cpus['training'])}: the database's own "
        "work is done at the other end of the link, as on another machine."
    )


def _cpu_list(cpus: list[int]) -> str:
    return ("core " if len(cpus) == 1 else "cores ") + ", ".join(map(str, cpus))


def _trips(trips: dict[str, Any] | None) -> str:
    if not trips:
        return "–"
    return f"{trips['per_fit']:.1f} ({trips['total']:,} in {trips['fits']} fits)"


def section(r: dict[str, Any]) -> Lines:
    b = r["benchmarks"]
    delays = _delays(b)
    if not delays:
        return []
    f = b["remote_db"]["postgresql"]
    source = get(r, "sources", "remote_db")
    out = [
        "## 7. A database on another machine (PostgreSQL behind a slow link)",
        "",
        f"`model.fit` of the model of benchmark 2 ({f['samples']:,} samples, batch {f['batch']}, "
        f"{f['epochs']} epochs), tracking to PostgreSQL through `bench/latency_proxy.py`, a TCP "
        "proxy on loopback that delays every byte by the given time each way (a round trip costs "
        "twice that, plus the proxy's own ~0.1–0.5 ms). "
        f"{f['reps']} repetitions per tool and delay, each tool in its own process against its "
        "own untracked baseline fit, the order rotated each time. tracker: `TrackingCallback("
        "save_best_weights=False)`; its epoch writes go to a writer thread, at most one epoch in "
        "flight, each write one round trip to the server (an epoch's a single statement in "
        "autocommit from commit 94c8ef1 on, before it psycopg's pipeline mode: BEGIN, the "
        "statements and COMMIT sent together), and the run's end, written with the last epoch "
        "in one transaction, waits for all of them. MLflow: `mlflow.keras."
        "MlflowCallback()` with `mlflow.start_run()` / `end_run()` around the fit, its tracking "
        "store the same server through the same proxy (the SQLAlchemy store, as in the other "
        "benchmarks: MLflow's tracking server would put one more hop, not less, behind the link). "
        + _cores(f.get("cpus")),
        "",
        "*End of an epoch*: how long the tool's end-of-epoch work holds training up, median (and "
        "p95, max) over every epoch of every fit (tracker: the work its fit guard runs after the "
        "other callbacks, where the epoch is handed over; MLflow: `MlflowCallback.on_epoch_end`, "
        "which queues the metrics for its own background thread). *Start* and *end*: the run's "
        "start (tracker: `on_train_begin`; MLflow: `start_run` + `on_train_begin`) and end "
        "(tracker: `on_train_end`, which waits until the whole run is stored; MLflow: `end_run`, "
        "which flushes its queue). *In hooks*: all the tool's hooks, with start and end, per fit "
        "÷ the baseline fit; *first fit*: the same for a process's first fit, which also opens "
        "the store through the link and checks its schema (each tool's schema is made "
        "beforehand, not through the link, as a shared database already has it), on a model "
        "an untracked fit already traced: the worst case; *a script's first fit*: a new "
        "process's first fit of a new model, traced inside it while the store opens, against "
        "an untracked fit of another new model. "
        "*End to end*: as in benchmark 2, with the interval that holds the true median with 90 % "
        "probability (order statistics, whatever the distribution); the first fit, median of "
        f"{f.get('first_fit_procs', 1)} processes. "
        "*Round trips per fit*: the times a client waited for the server's reply through the "
        "proxy (`LatencyProxy.round_trips`), over all the tool's tracked fits of its process, "
        "the first fit's connecting and schema check included (tracker, once the store is "
        "open: one for the run's creation, one per epoch but the last, one for the last epoch "
        "with the run's end).",
        "",
        "*Threads' CPU*: CPU time of the tracker's own threads per fit, median (its writer, "
        "for the writes it applied during the fit, and its heartbeat), beside the time in the "
        "hooks on the training thread. *Empty callback*: the end-to-end figure of a callback "
        "that does nothing, in the tracker's process: Keras's cost of one more callback, and "
        "the machine's noise.",
        "",
        "| delay each way | tool | end of an epoch: median / p95 / max | start | end | "
        "in hooks | in hooks, first fit | in hooks, a script's first fit | threads' CPU | "
        "end to end | empty callback | round trips per fit | baseline fit | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for delay, d in delays.items():
        for tool, name in (("tracker", "tracker_epoch"), ("mlflow", "mlflow_callback_epoch")):
            t = get(d, tool, name)
            if not t:
                continue
            first = get(d, tool, "first_fit", "in_hooks")
            out.append(
                row(
                    f"{float(delay):g} ms",
                    "tracker" if tool == "tracker" else "MLflow",
                    f"{ms(t['epoch_end_median_s'])} / {ms(t['epoch_end_p95_s'])} / "
                    f"{ms(t['epoch_end_max_s'])}",
                    ms(t["train_begin_s"]),
                    ms(t["train_end_s"]),
                    f"{ms(t['in_hooks_s'])} = {pct(t['in_hooks'])}",
                    pct(first) if first is not None else "–",
                    pct(get(d, tool, "cold_fit", "in_hooks")),
                    ms(t.get("thread_cpu_s")),
                    end_to_end(t),
                    end_to_end(get(d, tool, "empty_callback")),
                    _trips(d[tool].get("round_trips")),
                    secs(d[tool]["none"]["seconds"]["median"]),
                    load(d[tool]),
                )
            )
    if source:
        out += [
            "",
            f"From `bench/results/{source['file']}` (commit `{(source['commit'] or '?')[:10]}`, "
            f"{source['started_at']}, load {source['load']}). Other runs of this benchmark are "
            "kept in `bench/results/`. The load column says how busy the machine was: on 2 "
            "cores, a load above 2 means work waited for a core, and the fits' times with it.",
        ]
    return out + [""]
