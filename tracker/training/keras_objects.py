"""Reading what a Keras model, optimizer and the other callbacks of a `fit` hold.

Duck-typed on purpose (classes are matched by name along the MRO), so this module imports neither
Keras nor TensorFlow and each reader can be tried on plain objects.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

from tracker.training.environment import keras_backend
from tracker.values import plain, scalar

FIT_ARGS = (
    "batch_size",
    "initial_epoch",
    "validation_split",
    "validation_freq",
    "shuffle",
    "steps_per_epoch",
    "validation_steps",
    "validation_batch_size",
)


def is_a(obj: Any, class_name: str) -> bool:
    return any(c.__name__ == class_name for c in type(obj).__mro__)


def find(callbacks: list[Any], class_name: str) -> list[Any]:
    return [cb for cb in callbacks if is_a(cb, class_name)]


def early_stopping(callbacks: list[Any]) -> Any | None:
    found = find(callbacks, "EarlyStopping")
    return found[0] if found else None


def not_the_writer(model: Any) -> str | None:
    """Why this process must not record the `fit` (a sentence for the warning), or None when it
    is the one that writes: one run per fit, written by process 0 (the chief).

    Asked in order, the first that knows answers: the model's `tf.distribute` strategy (its
    `should_checkpoint`; not the default strategy, which knows of no cluster), the JAX
    processes (`jax.distributed`, which `keras.distribution.initialize` starts), an initialised
    `torch.distributed` group, then `TF_CONFIG`."""
    for ask in (_strategy_says, _jax_says, _torch_says):
        answer = ask(model)
        if answer is not None:
            return answer or None
    return _tf_config_says()


def _strategy_says(model: Any) -> str | None:
    """'' (may write), a reason (may not), or None (no strategy in use to ask)."""
    try:
        strategy = getattr(model, "distribute_strategy", None)
        if strategy is None or is_a(strategy, "_DefaultDistributionStrategy"):
            return None
        should = strategy.extended.should_checkpoint
    except Exception:  # noqa: BLE001 - a strategy that cannot say
        return None
    if should:
        return ""
    return f"its {type(strategy).__name__} says this worker does not checkpoint"


def _jax_says(model: Any) -> str | None:
    jax = sys.modules.get("jax")
    if jax is None or keras_backend() != "jax":
        return None
    try:
        count, index = int(jax.process_count()), int(jax.process_index())
    except Exception:  # noqa: BLE001
        return None
    if count <= 1:
        return None
    return "" if index == 0 else f"it is JAX process {index} of {count}"


def _torch_says(model: Any) -> str | None:
    torch = sys.modules.get("torch")
    if torch is None or keras_backend() != "torch":
        return None
    try:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return None
        rank, size = int(dist.get_rank()), int(dist.get_world_size())
    except Exception:  # noqa: BLE001
        return None
    return "" if rank == 0 else f"it is torch.distributed rank {rank} of {size}"


def _tf_config_says() -> str | None:
    """Multi-worker training described by TF_CONFIG: the chief writes, else worker 0."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except ValueError:
        return None
    task = cfg.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0) or 0)
    if kind in (None, "chief"):
        return None
    if kind == "worker" and "chief" not in (cfg.get("cluster") or {}) and index == 0:
        return None
    return f"TF_CONFIG names it {kind} {index}"


def _number(value: Any) -> float | None:
    try:
        return scalar(value)
    except Exception:  # noqa: BLE001 - an unreadable value is recorded as unknown
        return None


def optimizers(model: Any) -> dict[str, Any]:
    """The optimizers a model trains with, by the metric key of their learning rate: `lr` for
    `model.optimizer`, `lr/<attribute>` for any other the model holds (a GAN's `train_step`
    steps a `d_optimizer` and a `g_optimizer` of its own)."""
    main = getattr(model, "optimizer", None)
    found = {"lr": main} if main is not None else {}
    try:
        attributes = list(vars(model).items())
    except TypeError:
        return found
    for name, value in attributes:
        if not name.startswith("_") and value is not main and is_a(value, "Optimizer"):
            found[f"lr/{name}"] = value
    return found


def current_lrs(opts: dict[str, Any]) -> dict[str, float]:
    """The learning rates in effect now: a variable's value, or a schedule at the current step.

    `optimizer.learning_rate` does both in Keras 3 (there is no `optimizer.lr` any more).
    """
    out = {}
    for key, opt in opts.items():
        try:
            lr = _number(opt.learning_rate)
        except Exception:  # noqa: BLE001 - an exotic optimizer must not stop training
            lr = None
        if lr is not None:
            out[key] = lr
    return out


def steps_taken(opts: dict[str, Any]) -> dict[str, int]:
    """Each optimizer's step count (only read when a model has several)."""
    out = {}
    for key, opt in opts.items():
        try:
            out[key] = int(opt.iterations)
        except Exception:  # noqa: BLE001
            out[key] = -1
    return out


def _count(weights: Any) -> int:
    return sum(math.prod(int(d) for d in w.shape) for w in weights or [])


def model_info(model: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"class": type(model).__name__, "name": getattr(model, "name", None)}
    try:
        info["trainable_params"] = _count(model.trainable_weights)
        info["non_trainable_params"] = _count(model.non_trainable_weights)
    except Exception:  # noqa: BLE001
        pass
    try:
        info["architecture"] = json.loads(model.to_json())
    except Exception:  # noqa: BLE001 - subclassed models have no JSON form
        info["architecture"] = None
    info["layers"] = _layers(model)
    opts = optimizers(model)
    for key, opt in opts.items():
        about = {"class": type(opt).__name__, "config": _config(opt)}
        if key == "lr":
            info["optimizer"] = about
        else:
            info.setdefault("optimizers", {})[key.removeprefix("lr/")] = about
    return info


def _layers(model: Any) -> list[dict[str, Any]] | None:
    """The top-level layers as `Model.summary` lists them (name, class, output shape, weights).
    Collected by hand: Keras draws its summary through rich, at a far higher cost per fit
    (bench/RESULTS.md, section 9)."""
    try:
        layers = list(model.layers)
    except Exception:  # noqa: BLE001 - a model without a layer list
        return None
    out = []
    for layer in layers:
        try:
            shape: list[Any] | None = list(layer.output.shape)
        except Exception:  # noqa: BLE001 - not built, or several outputs
            shape = None
        try:
            params = int(layer.count_params()) if getattr(layer, "built", False) else 0
        except Exception:  # noqa: BLE001
            params = None
        out.append(
            {
                "name": getattr(layer, "name", None),
                "class": type(layer).__name__,
                "output_shape": shape,
                "params": params,
                "trainable": bool(getattr(layer, "trainable", True)),
            }
        )
    return out


def _config(obj: Any) -> Any:
    try:
        return plain(obj.get_config())
    except Exception:  # noqa: BLE001
        return None


def fit_params(
    params: dict[str, Any] | None, fit_locals: dict[str, Any], callbacks: list[Any]
) -> dict[str, Any]:
    out: dict[str, Any] = dict(params or {})
    for name in FIT_ARGS:
        if name in fit_locals:
            out[name] = fit_locals[name]
    validation = has_validation(fit_locals)
    if validation is not None:
        out["validation"] = validation
    out["callbacks"] = [
        type(cb).__name__
        for cb in callbacks
        if type(cb).__name__ not in ("History", "ProgbarLogger")
    ]
    for es in find(callbacks, "EarlyStopping"):
        out["early_stopping"] = early_stopping_config(es)
    out["model_checkpoints"] = [
        {
            "filepath": os.path.abspath(cb.filepath),
            "monitor": cb.monitor,
            "save_best_only": cb.save_best_only,
            "save_weights_only": cb.save_weights_only,
            "save_freq": cb.save_freq,
        }
        for cb in find(callbacks, "ModelCheckpoint")
    ]
    return {k: v for k, v in plain(out).items() if v is not None and v != []}


def has_validation(fit_locals: dict[str, Any]) -> bool | None:
    """Whether `fit` validates (on some epochs at least); None when its arguments are unknown."""
    if not fit_locals:
        return None
    split = scalar(fit_locals.get("validation_split")) or 0.0
    return fit_locals.get("validation_data") is not None or split > 0


def early_stopping_config(es: Any) -> dict[str, Any]:
    return {
        "monitor": es.monitor,
        "min_delta": abs(float(es.min_delta)),
        "patience": es.patience,
        "mode": es.mode,
        "baseline": es.baseline,
        "start_from_epoch": es.start_from_epoch,
        "restore_best_weights": es.restore_best_weights,
    }


def references(callbacks: list[Any]) -> list[dict[str, Any]]:
    refs = []
    for cb in find(callbacks, "TensorBoard"):
        refs.append({"kind": "tensorboard", "path": os.path.abspath(str(cb.log_dir))})
    for cb in find(callbacks, "CSVLogger"):
        refs.append({"kind": "csv_logger", "path": os.path.abspath(str(cb.filename))})
    for cb in find(callbacks, "BackupAndRestore"):
        refs.append({"kind": "backup_and_restore", "path": os.path.abspath(str(cb.backup_dir))})
    return refs


def monitor_mode(cb: Any) -> str:
    """`min` or `max` for a Keras MonitorCallback (ModelCheckpoint, EarlyStopping, ...)."""
    if cb.mode in ("min", "max"):
        return cb.mode
    op = getattr(cb, "monitor_op", None)
    name = getattr(op, "__name__", "")
    if name in ("less", "greater"):
        return "min" if name == "less" else "max"
    from tracker.modes import infer_mode

    return infer_mode(cb.monitor) or "min"


def early_stopping_outcome(es: Any) -> dict[str, Any]:
    out = early_stopping_config(es)
    stopped = int(getattr(es, "stopped_epoch", 0) or 0)
    best = getattr(es, "best", None)
    restored = es.restore_best_weights and getattr(es, "best_weights", None) is not None
    out.update(
        stopped=stopped > 0,
        stopped_epoch=stopped if stopped > 0 else None,
        best=_number(best) if best is not None else None,
        best_epoch=getattr(es, "best_epoch", None) if best is not None else None,
        restored_epoch=getattr(es, "best_epoch", None) if restored else None,
    )
    return out


def stop_reason(
    model: Any,
    stopper: tuple[Any, int | None, int | None] | None,
    callbacks: list[Any],
    epoch: int | None,
) -> tuple[str, dict[str, Any]]:
    """Why a `fit` that returned normally stopped, and the details of it."""
    details: dict[str, Any] = {"epoch": epoch}
    es = early_stopping(callbacks)
    if es is not None:
        details["early_stopping"] = early_stopping_outcome(es)
    if stopper is None and not getattr(model, "stop_training", False):
        return "completed", details
    cb, at_epoch, batch = stopper if stopper is not None else (None, epoch, None)
    if cb is not None and is_a(cb, "EarlyStopping"):
        details["early_stopping"] = early_stopping_outcome(cb)
        return "early_stopping", details
    if cb is not None and is_a(cb, "TerminateOnNaN"):
        details["terminate_on_nan"] = {"epoch": at_epoch, "batch": batch}
        return "terminate_on_nan", details
    details["callback"] = type(cb).__name__ if cb is not None else None
    return "stopped_by_callback", details
