"""6. A database on another machine: `model.fit` of the tiny model with PostgreSQL behind a link
that adds 0, 1 and 5 ms each way (bench/latency_proxy.py on loopback, in this process). The server
and the link run on a core of their own (the last), the fits on the others, as the machine at the
other end of a link would; with one core they share it.

For each delay, tracker (bench/fit_latency.py) and MLflow's Keras callback (mlflow_driver.py
`fit_latency`, its tracking store on the same proxied server) each train in a process of their
own, against an untracked baseline fit in that process, the variants' order rotated every
repetition. Measured: how long the end of each epoch holds training up (tracker: the work its fit
guard runs after the other callbacks; MLflow: `MlflowCallback.on_epoch_end`), the time spent in
all of the tool's hooks (MLflow: with `start_run` and the end of the run, which it needs) over the
baseline fit, the end-to-end overhead as in benchmark 2, and how many round trips through the
link each tool's fits took (the proxy counts them).
"""

from __future__ import annotations

import statistics
import sys
from typing import Any
from urllib.parse import urlsplit

from common import percentile
from fit_overhead import overheads
from harness import BENCH, Context, on_cpus, run_json, split_cpus
from latency_proxy import LatencyProxy


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0]
    return parts._replace(netloc=f"{user}@127.0.0.1:{port}").geturl()


# Which timed calls are the start of a run, the end of an epoch and the end of the run.
TRACKER_HOOKS = ("on_train_begin", "_after_epoch_end", "_after_train_end")
MLFLOW_HOOKS = ("start_run", "on_epoch_end", "end_run")


def holdups(fits: list[dict[str, Any]], base: float, names: tuple[str, ...]) -> dict[str, Any]:
    """Per-epoch hold-up (median over every epoch of every fit) and time in hooks per fit."""
    begin_hook, epoch_hook, end_hook = names
    epoch_ends = [s for f in fits for s in f["hooks"].get(epoch_hook, [])]
    spent = [sum(sum(v) for v in f["hooks"].values()) for f in fits]
    begin = [sum(f["hooks"].get(begin_hook, [])) for f in fits]
    end = [sum(f["hooks"].get(end_hook, [])) for f in fits]
    cpu = [sum(f["thread_cpu"].values()) for f in fits if "thread_cpu" in f]
    return {
        "thread_cpu_s": statistics.median(cpu) if cpu else None,
        "epoch_end_median_s": statistics.median(epoch_ends),
        "epoch_end_p95_s": percentile(epoch_ends, 95),
        "epoch_end_max_s": max(epoch_ends),
        "epoch_ends": len(epoch_ends),
        "in_hooks_s": statistics.median(spent),
        "in_hooks": statistics.median(spent) / base,
        "train_begin_s": statistics.median(begin),
        "train_end_s": statistics.median(end),
    }


def _round_trips(count: int, res: dict[str, Any]) -> dict[str, Any]:
    """Round trips through the link (the proxy's count) of a process's tracked fits, with the
    first fit's connecting and schema check, and per fit."""
    fits = 1 + len(res["fits"])
    return {"total": count, "fits": fits, "per_fit": count / fits}


def run(ctx: Context, backend: str) -> dict[str, Any]:
    assert ctx.postgres is not None, "PostgreSQL only"
    size = ctx.size
    shape = {"samples": size.fit_samples, "batch": size.fit_batch, "epochs": size.fit_epochs}
    out: dict[str, Any] = {**shape, "reps": size.latency_reps, "delays": {}}
    out["first_fit_procs"] = size.first_fit_procs
    server = urlsplit(ctx.postgres.server_url)
    # The database is "on another machine": the server and the link run on a core of their
    # own, the fits (tracked or not, either tool) on the others. On one core they share it.
    split = split_cpus()
    training, elsewhere = split if split else (None, None)
    if elsewhere is not None:
        ctx.postgres.pin(elsewhere)
    out["cpus"] = {"training": sorted(training or ()), "server_and_link": sorted(elsewhere or ())}
    for delay_ms in size.latency_delays_ms:
        host, port = server.hostname or "127.0.0.1", server.port or 5432
        proxy = LatencyProxy(host, port, delay_ms / 1e3, cpus=elsewhere)
        port = proxy.start()
        try:
            with on_cpus(training):
                out["delays"][str(delay_ms)] = _one_delay(ctx, proxy, port, delay_ms, shape)
        finally:
            proxy.stop()
    return out


def _create_schema(url: str) -> None:
    """Make the tracker's schema, not through the link: done once per database, it is no part
    of what a training process pays (a process's first fit opens the store and checks the
    schema, which the benchmark measures)."""
    from tracker import open_store

    open_store(url, auto_upgrade=True).close()


def _one_delay(
    ctx: Context, proxy: LatencyProxy, port: int, delay_ms: float, shape: dict[str, int]
) -> dict[str, Any]:
    size = ctx.size
    ctx.log(f"    {delay_ms:g} ms each way ...")
    direct = ctx.new_db("postgresql", f"latency_tracker_{delay_ms:g}ms")
    _create_schema(direct)
    url = _through(direct, port)
    work = ctx.scratch(f"latency-{delay_ms:g}")
    command = [sys.executable, str(BENCH / "fit_latency.py"), "--db", url, "--workdir", str(work)]
    command += [f"--{k}={v}" for k, v in shape.items()]
    before = proxy.round_trips
    res = run_json([*command, f"--reps={size.latency_reps}"], cwd=work)
    out: dict[str, Any] = {"delay_ms": delay_ms, "tracker": overheads(res["times"])}
    out["tracker"]["round_trips"] = _round_trips(proxy.round_trips - before, res)
    out["tracker"]["fit_cpus"] = res["cpus"]
    base = out["tracker"]["none"]["seconds"]["median"]
    out["tracker"]["tracker_epoch"].update(holdups(res["fits"], base, TRACKER_HOOKS))
    # A process's first fit, in more processes of their own (one fit each after the warm-up):
    # one sample per process is too few to tell it from the machine's noise.
    firsts = [res["first_fit"]]
    for _ in range(size.first_fit_procs - 1):
        firsts.append(run_json([*command, "--reps=0"], cwd=work)["first_fit"])
    out["tracker"]["first_fit"] = holdups(firsts, base, TRACKER_HOOKS) | {"processes": len(firsts)}
    # A script's first fit: the model is traced inside it, as the store opens.
    colds = [run_json([*command, "--cold"], cwd=work) for _ in range(size.first_fit_procs)]
    cold_base = statistics.median(c["cold_base_s"] for c in colds)
    out["tracker"]["cold_fit"] = holdups([c["cold_fit"] for c in colds], cold_base, TRACKER_HOOKS)
    out["tracker"]["cold_fit"] |= {"processes": len(colds), "baseline_s": cold_base}
    out["tracker"]["loadavg"] = res["loadavg"]
    if ctx.mlflow:
        ml_direct = ctx.new_db("postgresql", f"latency_mlflow_{delay_ms:g}ms")
        ctx.mlflow.call("create_store", cwd=ctx.scratch("mlflow-schema"), uri=ml_direct)
        ml_url = _through(ml_direct, port)
        before = proxy.round_trips
        ml = ctx.mlflow.call(
            "fit_latency",
            cwd=ctx.scratch(f"mlflow-latency-{delay_ms:g}"),
            uri=ml_url,
            reps=size.latency_reps,
            **shape,
        )
        out["mlflow"] = overheads(ml["times"])
        out["mlflow"]["round_trips"] = _round_trips(proxy.round_trips - before, ml)
        ml_base = out["mlflow"]["none"]["seconds"]["median"]
        out["mlflow"]["mlflow_callback_epoch"].update(holdups(ml["fits"], ml_base, MLFLOW_HOOKS))
        out["mlflow"]["first_fit"] = holdups([ml["first_fit"]], ml_base, MLFLOW_HOOKS)
        out["mlflow"]["callback"] = ml["callback"]
        out["mlflow"]["loadavg"] = ml["loadavg"]
    return out
