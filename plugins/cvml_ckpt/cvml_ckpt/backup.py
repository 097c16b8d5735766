"""The rolling backup of ``CkptCallback``: when one is due, what it holds besides the
weights, and how a plain ``model.fit`` is made to start at its step.

A backup is ``log_dir/ckpt/backup.weights.h5`` (Keras' ``save_weights``: the model's
weights and the optimizer state, its iteration count included) and its manifest entry
(``kind: "backup"``), whose ``details`` hold the training position (``epoch_index``,
0-based, and ``step``, the batches done in that epoch), and the small state that
``save_weights`` leaves out: the seed generators' state (``model.variables`` that are
not ``model.weights``: dropout and random augmentation layers) and the compiled
metrics' accumulators (``model.metrics_variables``), so the resumed epoch's logs
average over the whole epoch.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cvml_core.keras_compat import keras

KIND = "backup"
NAME = "backup.weights.h5"
ROLE = "backup"


def check_interval(name: str, value: Any, kind: type) -> Any:
    """``None`` or a positive number of steps (int) or seconds (int or float)."""
    if value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
    if not ok or not value > 0:
        allowed = "an integer >= 1" if kind is int else "a number of seconds > 0"
        raise ValueError(
            f"{name} must be {allowed} or None (no backups). Received: {name}={value!r}"
        )
    return value


class Schedule:
    """When a backup is due: every ``steps`` batches and/or every ``seconds`` seconds
    (whichever comes first), counted from the last backup taken."""

    def __init__(self, steps: int | None, seconds: float | None) -> None:
        self.steps, self.seconds = steps, seconds
        self.reset()

    def reset(self) -> None:
        self.batches = 0
        self.since = time.monotonic()

    def step(self, batches: int) -> bool:
        """Count ``batches`` more; whether a backup is due now."""
        self.batches += batches
        if self.steps is not None and self.batches >= self.steps:
            return True
        return self.seconds is not None and time.monotonic() - self.since >= self.seconds


def _others(model: Any) -> list[Any]:
    """The model's variables that ``save_weights`` does not keep (seed generators)."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _values(variables: list[Any]) -> list[list[Any]]:
    return [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in variables]


def _assign(variables: list[Any], values: list[Any] | None) -> bool:
    if values is None or len(values) != len(variables):
        return False
    arrays = [np.asarray(value, dtype=str(v.dtype)) for v, value in zip(variables, values,
                                                                         strict=True)]
    if any(a.shape != tuple(v.shape) for a, v in zip(arrays, variables, strict=True)):
        return False
    for variable, array in zip(variables, arrays, strict=True):
        variable.assign(array)
    return True


def small_state(model: Any) -> dict[str, Any]:
    """The seed generators' and metrics' state, as JSON-able lists (a few numbers)."""
    return {
        "seed_state": _values(_others(model)),
        "metrics_state": {
            str(v.path): value
            for v, value in zip(model.metrics_variables, _values(list(model.metrics_variables)),
                                strict=True)
        },
    }


def restore_seed_state(model: Any, details: dict[str, Any]) -> bool:
    return _assign(_others(model), details.get("seed_state"))


def restore_metrics_state(
    model: Any, saved: dict[str, Any], add: bool = False
) -> dict[str, Any]:
    """Give the compiled metrics the sums of the batches done before the backup; return
    those not restored because the metric does not exist yet.

    Call it at the resumed epoch's begin, after Keras reset them; on TensorFlow the
    compiled metrics other than the loss are built by the first training step, so
    they get theirs after it (``add=True``: the sums of that step are kept)."""
    left = dict(saved)
    for variable in model.metrics_variables:
        value = left.pop(str(variable.path), None)
        if value is None:
            continue
        array = np.asarray(value, dtype=str(variable.dtype))
        if array.shape != tuple(variable.shape):
            continue
        variable.assign(variable + array if add else array)
    return left


def start_fit_at(model: Any, epoch_index: int, steps: int) -> None:
    """Make the ``model.fit`` that is starting (call it from ``on_train_begin``) begin
    at epoch ``epoch_index`` (0-based), its first ``steps`` batches read and not trained.

    Keras has no public way to do either from a callback, so this is the one place that
    uses Keras' fit loop's internals (the same in Keras 3.12 to 3.15, tested on each
    backend): ``model._initial_epoch``, which Keras' own ``BackupAndRestore`` sets and
    ``fit`` reads after ``on_train_begin``, and ``model.train_function``, which ``fit``
    made before ``on_train_begin`` and calls once per ``steps_per_execution`` batches:
    it is wrapped so that its first calls only advance the data (TensorFlow and JAX
    pass the iterator; torch passes the batch it already read) and return the training
    state unchanged, then it is put back.
    """
    model._initial_epoch = epoch_index
    per_call = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
    calls = -(-steps // per_call)
    if calls <= 0:
        return
    original = model.train_function
    backend = keras.backend.backend()
    left = [calls]

    def skipping(*args: Any) -> Any:
        left[0] -= 1
        if left[0] <= 0:
            model.train_function = original
        if backend == "torch":  # the loop read the batch already
            return {}
        iterator = args[-1]
        for _ in range(per_call):
            next(iterator)
        return ({}, args[0]) if backend == "jax" else {}

    skipping.__wrapped__ = original  # type: ignore[attr-defined]
    model.train_function = skipping


def end_fit_at(model: Any, skipping: bool = True) -> None:
    """Undo :func:`start_fit_at` once ``fit`` has read the epoch (at the first epoch's
    begin, ``skipping=False``) or has ended: a later ``fit`` starts where its caller
    says."""
    if getattr(model, "_initial_epoch", None) is not None:
        model._initial_epoch = None
    if not skipping:
        return
    original = getattr(getattr(model, "train_function", None), "__wrapped__", None)
    if original is not None and getattr(model.train_function, "__name__", "") == "skipping":
        model.train_function = original
