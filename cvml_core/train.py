"""``TrainInfer``: the seed's training wrapper around ``model.fit`` / ``predict`` / ``evaluate``.

Example::

    train_infer = TrainInfer(model, log_dir="runs/x", basis_dict={"val_loss": "min"})
    history = train_infer.train(train_ds, dev_ds, batch_size=32, epochs=10,
                                callbacks=["ckpt", {"name": "tb", "image_shape": (8, 8, 1)}],
                                teams_webhook_url=url)
    predictions = train_infer.infer(test_ds)

Data: a ``tf.data.Dataset`` of ``(x, y)`` (batched or not) or an ``(x, y)`` tuple of
arrays. Whether a dataset is batched is read from its structure (the last
``batch``/``unbatch`` in its pipeline), else from the rank of its inputs compared with
the model's inputs, else from its leading dimension (unknown means batched).

Callbacks that want sample data (``wants_sample_data = True``, e.g. ``tb`` for images,
``tflite`` for calibration) get the first :data:`SAMPLE_SIZE` examples of the dev set
through ``set_sample_data(x, y)`` before training, unless they already have some.

Data checks: before the first epoch (and before any callback folder is made), the
first batch of ``train_dataset`` and ``dev_dataset`` is checked against the model's
inputs and the compiled loss (input shapes; with a sparse or one-hot categorical loss,
the label shape and class-id range): see :mod:`cvml_core.data_checks`. Only the first
batch is checked; multi-input/multi-output models are checked where the structure
allows it; a dataset of unknown cardinality (possibly one-shot, e.g. ``from_generator``)
is not read: only its ``element_spec`` shapes are checked.

Resume: ``start_epoch=N`` trains epochs N+1 .. ``epochs`` (Keras ``initial_epoch``) and
first calls ``restore_latest(model, max_epoch=N)`` on the callbacks that have it (the
``ckpt`` callback): the first one that returns an epoch > 0 restored the weights.
Basis bests come back by themselves: each callback reloads its ``manifest.json``.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from cvml_core.artifact import Artifact
from cvml_core.basis import BasisPolicy, is_integer, validate_basis_dict
from cvml_core.data_checks import check_first_batch
from cvml_core.distribute import is_chief
from cvml_core.keras_compat import Callback
from cvml_core.plugins import call_hook, get_registry
from cvml_core.run import RunInfo
from cvml_core.table import format_table
from cvml_core.teams import validate_webhook_url

#: How many dev examples a callback that wants sample data receives.
SAMPLE_SIZE = 32
_ARTIFACT_FIELDS = {f.name for f in fields(Artifact)}


# -- data ----------------------------------------------------------------------------


def _first_spec(spec: Any) -> Any:
    """The spec of the model input in a dataset element ``(x, y, ...)`` or ``x``."""
    if isinstance(spec, tuple) and spec:
        spec = spec[0]
    flat = tf.nest.flatten(spec)
    return flat[0] if flat else None


def _first_batch_size(dataset: tf.data.Dataset) -> int | None:
    """The leading size of the dataset's first element, read through the public API;
    None for a dataset that may be readable once (unknown cardinality)."""
    if int(dataset.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY):
        return None
    try:
        element = next(iter(dataset.take(1)))
    except StopIteration:
        return None
    shape = getattr(_first_spec(element), "shape", None)
    return int(shape[0]) if shape is not None and shape.rank else None


def _model_input_rank(model: Any) -> int | None:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1:
        return None
    shape = getattr(inputs[0], "shape", None)
    return None if shape is None else len(shape)


def dataset_batching(dataset: tf.data.Dataset, model: Any = None) -> tuple[bool, int | None]:
    """Whether ``dataset`` yields batches, and their size when it is known.

    Decided from the public ``element_spec`` against the model's input: one more axis
    than an example means batches. When that cannot tell (the model's input rank is
    unknown), the dataset is taken as batched, as ``model.fit`` does. The size is the
    static leading dimension, else that of the first batch.
    """
    spec = _first_spec(dataset.element_spec)
    shape = getattr(spec, "shape", None)
    batched = True
    model_rank = _model_input_rank(model)
    if shape is not None and shape.rank is not None and model_rank is not None:
        batched = shape.rank != model_rank - 1
    if not batched:
        return False, None
    size = shape[0] if shape is not None and shape.rank else None
    return True, size if size is not None else _first_batch_size(dataset)


class _Data:
    """Data ready for Keras: a batched dataset, or arrays with a batch size."""

    def __init__(self, x: Any, y: Any = None, batch_size: int | None = None) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size

    @property
    def is_dataset(self) -> bool:
        return isinstance(self.x, tf.data.Dataset)

    def fit_args(self) -> dict[str, Any]:
        if self.is_dataset:  # a dataset is shuffled (or not) by its own pipeline
            return {"x": self.x, "shuffle": False}
        return {"x": self.x, "y": self.y, "batch_size": self.batch_size}

    def validation(self) -> Any:
        return self.x if self.is_dataset else (self.x, self.y)

    def sample(self, n: int) -> tuple[Any, Any]:
        """The first ``n`` examples as numpy: ``(x, y)``, ``y`` None if there is none."""
        if not self.is_dataset:
            x = tf.nest.map_structure(lambda a: np.asarray(a)[:n], self.x)
            y = None if self.y is None else tf.nest.map_structure(
                lambda a: np.asarray(a)[:n], self.y
            )
            return x, y
        element = next(iter(self.x.unbatch().take(n).batch(n)))
        element = tf.nest.map_structure(lambda t: t.numpy(), element)
        if isinstance(element, tuple):
            return element[0], element[1] if len(element) > 1 else None
        return element, None


def _prepare(
    data: Any, batch_size: int | None, name: str, model: Any, strict: bool = True
) -> _Data:
    """Check ``data`` and batch it; a batch size that contradicts the dataset is an error."""
    if isinstance(data, tf.data.Dataset):
        batched, size = dataset_batching(data, model)
        if batched:
            if strict and batch_size is not None and size is not None and size != batch_size:
                raise ValueError(
                    f"{name} is already batched with batch size {size}, but batch_size="
                    f"{batch_size} was passed. Pass batch_size={size} (or None), or pass "
                    f"{name} unbatched so that it is batched with batch_size. "
                    f"Received: batch_size={batch_size!r}"
                )
            return _Data(data, batch_size=size or batch_size)
        if batch_size is None:
            raise ValueError(
                f"{name} is not batched, so batch_size is needed to batch it. "
                f"Received: batch_size=None"
            )
        return _Data(data.batch(batch_size).prefetch(tf.data.AUTOTUNE), batch_size=batch_size)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if batch_size is None:
            raise ValueError(f"{name} is an (x, y) tuple of arrays: batch_size is needed. "
                             "Received: batch_size=None")
        lengths = {len(a) for a in tf.nest.flatten(x) + tf.nest.flatten(y)}
        if len(lengths) > 1:
            raise ValueError(
                f"{name} is an (x, y) tuple whose arrays have different lengths: "
                f"{sorted(lengths)}. Received: {name} of lengths {sorted(lengths)}"
            )
        return _Data(x, y, batch_size)
    raise TypeError(
        f"{name} must be a tf.data.Dataset of (x, y) or an (x, y) tuple of arrays. "
        f"Received: {name} of type {type(data).__name__}"
    )


# -- callbacks -----------------------------------------------------------------------


def callback_label(callback: Any) -> str:
    """A callback's registered name (``ckpt``) or, for other callbacks, its class name."""
    name = getattr(type(callback), "name", None)
    if isinstance(name, str) and name and name != "callback":
        return name
    return type(callback).__name__


def resolve_callbacks(
    callbacks: Any, log_dir: Any, basis_dict: Mapping[str, str] | None
) -> list[Any]:
    """Build the callbacks list: objects as they are, names and dicts via the registry.

    ``"ckpt"`` builds ``cls(log_dir=log_dir, basis_dict=basis_dict)``; ``{"name": "tb",
    **options}`` adds the options (which may override ``log_dir``/``basis_dict``).
    Every name is looked up before any callback is built, so an unknown name raises
    :class:`~cvml_core.plugins.UnknownCallbackError` (listing installed names) first.
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, (str, Mapping)) or not isinstance(callbacks, Sequence):
        callbacks = [callbacks]
    plan: list[tuple[Any, type | None, dict[str, Any]]] = []
    for index, item in enumerate(callbacks):
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, Mapping):
            options = dict(item)
            name = options.pop("name", None)
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"callbacks[{index}] is a dict, so it needs a 'name' key naming an "
                    f"installed callback, e.g. {{'name': 'tb', ...options}}. "
                    f"Received: callbacks[{index}]={item!r}"
                )
        elif isinstance(item, Callback):
            plan.append((item, None, {}))
            continue
        elif isinstance(item, type):
            raise TypeError(
                f"callbacks[{index}] is the class {item.__name__}, not an instance: write "
                f"{item.__name__}(...). Received: callbacks[{index}]={item.__name__} "
                "(a class)"
            )
        else:
            raise TypeError(
                f"callbacks[{index}] must be a keras Callback, a registered name or a dict "
                f"with 'name'. Received: callbacks[{index}] of type {type(item).__name__}"
            )
        plan.append((name, get_registry().callback_class(name), options))
    resolved = []
    for item, cls, options in plan:
        if cls is None:
            resolved.append(item)
            continue
        kwargs: dict[str, Any] = {"log_dir": log_dir, "basis_dict": basis_dict}
        kwargs.update(options)
        missing = [k for k in ("log_dir", "basis_dict") if kwargs[k] is None]
        if missing:
            raise ValueError(
                f"callback {item!r} is given by name, so it needs {' and '.join(missing)}: "
                "pass them to TrainInfer(model, log_dir=..., basis_dict=...), to "
                f"train(..., log_dir=..., basis_dict=...) or in the callback's dict. "
                f"Received: {', '.join(f'{k}=None' for k in missing)}"
            )
        resolved.append(cls(**kwargs))
    return resolved


class _RunRecorder(Callback):
    """Keeps each finished epoch's logs, also when training later raises."""

    def __init__(self) -> None:
        super().__init__()
        self.logs: dict[str, Any] = {}
        self.epochs: list[int] = []
        self.history: dict[str, list[float]] = {}
        self.epoch_logs: list[tuple[int, dict[str, float]]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.logs = dict(logs or {})
        self.epochs.append(epoch + 1)
        numbers: dict[str, float] = {}
        for key, value in self.logs.items():
            try:
                numbers[key] = float(value)
            except (TypeError, ValueError):
                continue
            self.history.setdefault(key, []).append(numbers[key])
        self.epoch_logs.append((epoch + 1, numbers))


# -- TrainInfer ----------------------------------------------------------------------


class TrainInfer:
    """Train, evaluate and predict with a compiled Keras model, the seed's way.

    :param model: a compiled Keras model.
    :param log_dir: the run folder for callbacks given by name (may also be passed
        to :meth:`train`).
    :param basis_dict: ``{metric: "min"|"max"}`` for callbacks given by name and for
        the end summary (may also be passed to :meth:`train`).
    """

    def __init__(
        self,
        model: Any,
        log_dir: str | os.PathLike[str] | None = None,
        basis_dict: Mapping[str, str] | None = None,
    ) -> None:
        if not all(callable(getattr(model, m, None)) for m in ("fit", "predict", "evaluate")):
            raise TypeError(
                f"model must be a Keras model. Received: model of type {type(model).__name__}"
            )
        if getattr(model, "compiled", True) is False:
            raise ValueError(
                "model must be compiled (model.compile(optimizer=..., loss=..., "
                "metrics=[...])) before TrainInfer can train it. Received: an uncompiled "
                f"model {getattr(model, 'name', '')!r}"
            )
        self.model = model
        self.log_dir = self._check_log_dir(log_dir)
        self.basis_dict = None if basis_dict is None else validate_basis_dict(basis_dict)
        self.batch_size: int | None = None
        self.callbacks: list[Any] = []
        self.history: Any = None
        self.run: RunInfo | None = None

    @staticmethod
    def _check_log_dir(log_dir: Any) -> str | None:
        if log_dir is None:
            return None
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(f"log_dir must be a folder path. Received: log_dir={log_dir!r}")
        return str(log_dir)

    # -- train -----------------------------------------------------------------------

    def train(
        self,
        train_dataset: Any,
        dev_dataset: Any,
        batch_size: int | None,
        epochs: int,
        callbacks: Any = None,
        start_epoch: int = 0,
        show_results: int = 1,
        teams_webhook_url: str | None = None,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        basis_dict: Mapping[str, str] | None = None,
    ) -> Any:
        """Train epochs ``start_epoch + 1`` .. ``epochs``, evaluating ``dev_dataset`` each one.

        :param train_dataset: a ``tf.data.Dataset`` of ``(x, y)``, batched or not, or an
            ``(x, y)`` tuple of arrays.
        :param dev_dataset: the same kinds, evaluated at every epoch end, so the logs
            hold ``val_*`` keys; None trains without validation.
        :param batch_size: batches unbatched datasets and arrays; for an already batched
            dataset it must match its batch size, or be None.
        :param epochs: the number of the last epoch (as Keras' ``epochs``).
        :param callbacks: a list mixing Keras callbacks, registered names (``"ckpt"``)
            and dicts (``{"name": "tb", "image_shape": (8, 8, 1)}``).
        :param start_epoch: epochs already done; resumes (see the module docs).
        :param show_results: 0 silent, 1 a progress bar, 2 a line per epoch; 1 and 2
            also print a summary table at the end.
        :param teams_webhook_url: post start/end/failure cards to this Teams Workflows
            webhook (https, or http to localhost); see :mod:`cvml_core.teams`.
        :param log_dir: overrides the ``TrainInfer``'s ``log_dir`` for this run.
        :param basis_dict: overrides the ``TrainInfer``'s ``basis_dict`` for this run.
        :returns: the Keras ``History``.

        Before the first epoch, the first batch of ``train_dataset`` and ``dev_dataset``
        is checked against the model's inputs and the loss (see the module docs); a
        mismatch is a ``ValueError`` naming the dataset, the shape received and the
        shape expected, raised before any callback is built or hook called.

        If training raises (a bad batch, a callback error, Ctrl-C), the callbacks'
        background work is awaited and ``cvml_train_end`` is called with the error,
        then the error is re-raised.
        """
        if not is_integer(epochs) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1. Received: epochs={epochs!r}")
        if not is_integer(start_epoch) or not 0 <= start_epoch < epochs:
            raise ValueError(
                "start_epoch must be an integer >= 0 and < epochs (the number of epochs "
                f"already done). Received: start_epoch={start_epoch!r} with epochs={epochs!r}"
            )
        if batch_size is not None and (not is_integer(batch_size) or batch_size < 1):
            raise ValueError(
                f"batch_size must be an integer >= 1 or None. Received: batch_size={batch_size!r}"
            )
        if isinstance(show_results, bool):
            show_results = int(show_results)
        if not is_integer(show_results) or show_results not in (0, 1, 2):
            raise ValueError(
                "show_results must be 0 (silent), 1 (progress bar) or 2 (one line per "
                f"epoch). Received: show_results={show_results!r}"
            )
        webhook_url = validate_webhook_url(teams_webhook_url)
        run_log_dir = self._check_log_dir(log_dir) or self.log_dir
        run_basis = validate_basis_dict(basis_dict) if basis_dict is not None else self.basis_dict

        # Data first: a bad batch size must not leave callback folders behind.
        train_data = _prepare(train_dataset, batch_size, "train_dataset", self.model)
        dev_data = (
            None if dev_dataset is None
            else _prepare(dev_dataset, batch_size, "dev_dataset", self.model)
        )
        for data_name, data in (("train_dataset", train_data), ("dev_dataset", dev_data)):
            if data is not None:
                check_first_batch(data_name, self.model, data.x, data.y, data.batch_size)
        cbs = resolve_callbacks(callbacks, run_log_dir, run_basis)
        _check_folders(cbs)
        if not start_epoch:
            _warn_earlier_bests(cbs)
        basis = dict(run_basis or {})
        for cb in cbs:
            policy = getattr(cb, "policy", None)
            for key, mode in getattr(policy, "basis", {}).items():
                basis.setdefault(key, mode)
        if dev_data is None and any(k.startswith("val_") for k in basis):
            raise ValueError(
                f"the basis keys {sorted(k for k in basis if k.startswith('val_'))} need a "
                "dev set: pass dev_dataset. Received: dev_dataset=None"
            )
        self.batch_size = batch_size or train_data.batch_size
        self._hand_sample_data(cbs, dev_data or train_data)
        restored: tuple[int | None, str] = (None, "")
        if start_epoch:
            restored = self._restore(cbs, start_epoch)

        recorder = _RunRecorder()
        manifest_sizes = [len(_manifest_entries(cb)) for cb in cbs]
        run = RunInfo(
            log_dir=run_log_dir,
            epochs=int(epochs),
            start_epoch=int(start_epoch),
            basis_dict=basis,
            callbacks=[callback_label(cb) for cb in cbs],
            webhook_url=webhook_url,
            model_name=str(getattr(self.model, "name", "") or ""),
            chief=is_chief(self.model),
            restored_epoch=restored[0],
            restored_by=restored[1],
        )
        self.callbacks, self.run = cbs, run
        call_hook("cvml_train_begin", run=run)
        fit_kwargs = train_data.fit_args()
        if dev_data is not None:
            fit_kwargs["validation_data"] = dev_data.validation()
            if not dev_data.is_dataset:
                fit_kwargs["validation_batch_size"] = dev_data.batch_size
        try:
            history = self.model.fit(
                **fit_kwargs,
                epochs=int(epochs),
                initial_epoch=int(start_epoch),
                verbose=int(show_results),
                callbacks=[recorder, *cbs],  # first: an epoch is recorded even if a callback raises
            )
        except BaseException as exc:
            for cb in cbs:
                wait = getattr(cb, "wait_for_background", None)
                if callable(wait):
                    wait(raise_error=False)  # warns about its own failure, never hides exc
            try:
                self._finish(run, recorder, cbs, manifest_sizes, exc)
            except Exception as hook_exc:
                warnings.warn(
                    f"cvml_train_end failed while handling a training error: "
                    f"{type(hook_exc).__name__}: {hook_exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            raise
        self.history = history
        self._finish(run, recorder, cbs, manifest_sizes, None)
        if show_results:
            print(self.summary())
        return history

    def _hand_sample_data(self, cbs: list[Any], data: _Data) -> None:
        wanting = [
            cb for cb in cbs
            if getattr(cb, "wants_sample_data", False)
            and getattr(cb, "sample_data", None) is None
            and callable(getattr(cb, "set_sample_data", None))
        ]
        if not wanting:
            return
        try:
            x, y = data.sample(SAMPLE_SIZE)
        except Exception as exc:
            warnings.warn(
                f"could not take {SAMPLE_SIZE} sample examples from the dev set for "
                f"{[callback_label(cb) for cb in wanting]}: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        for cb in wanting:
            cb.set_sample_data(x, y)

    def _restore(self, cbs: list[Any], start_epoch: int) -> tuple[int, str]:
        """Restore the weights: ``(epoch restored, by which callback)`` or ``(0, why not)``."""
        restorers = [cb for cb in cbs if callable(getattr(cb, "restore_latest", None))]
        for cb in restorers:
            epoch = int(cb.restore_latest(self.model, max_epoch=start_epoch) or 0)
            if epoch:
                if epoch < start_epoch:
                    warnings.warn(
                        f"start_epoch={start_epoch}: the latest checkpoint of "
                        f"{callback_label(cb)!r} up to that epoch is from epoch {epoch}; "
                        f"training resumes at epoch {start_epoch + 1} with those weights",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                return epoch, callback_label(cb)
        where = (
            "no callback can restore weights (add the 'ckpt' callback)"
            if not restorers
            else f"no checkpoint up to epoch {start_epoch} was found by "
            f"{[callback_label(cb) for cb in restorers]}"
        )
        warnings.warn(
            f"start_epoch={start_epoch} but {where}: training resumes with the model's "
            "current weights",
            RuntimeWarning,
            stacklevel=3,
        )
        return 0, where

    def _finish(
        self,
        run: RunInfo,
        recorder: _RunRecorder,
        cbs: list[Any],
        manifest_sizes: list[int],
        error: BaseException | None,
    ) -> None:
        run.end_time = time.time()
        run.epochs_done = recorder.epochs[-1] if recorder.epochs else run.start_epoch
        run.history = {k: list(v) for k, v in recorder.history.items()}
        run.best = self._bests(run, recorder, cbs)
        for cb, before in zip(cbs, manifest_sizes, strict=True):
            for entry in _manifest_entries(cb)[before:]:
                run.artifacts.append(_artifact(entry))
        call_hook("cvml_train_end", run=run, logs=dict(recorder.logs), error=error)

    @staticmethod
    def _bests(run: RunInfo, recorder: _RunRecorder, cbs: list[Any]) -> dict[str, dict[str, Any]]:
        """Per basis key, the best as the callbacks' basis policies decided it.

        A key no callback tracks is judged by the same policy over every epoch run.
        """
        bests: dict[str, dict[str, Any]] = {}
        for key, mode in run.basis_dict.items():
            tracked = [
                cb.policy.best[key] for cb in cbs
                if key in getattr(getattr(cb, "policy", None), "best", {})
            ]
            if not tracked:
                policy = BasisPolicy({key: mode})
                for number, logs in recorder.epoch_logs:
                    if key in logs:
                        policy.update(number, logs)
                tracked = [policy.best[key]]
            found = [kb for kb in tracked if kb.value is not None]
            if not found:
                bests[key] = {"value": None, "epoch": None}
                continue
            pick = min if mode == "min" else max
            best = pick(found, key=lambda kb: kb.value)
            bests[key] = {"value": best.value, "epoch": best.epoch}
        return bests

    def summary(self) -> str:
        """The end-of-training table: per basis key, best value, epoch and artifact paths."""
        run = self.run
        if run is None:
            return "No training run yet."
        latest: dict[tuple[str, str, str | None], Artifact] = {}
        for cb in self.callbacks:
            for entry in _manifest_entries(cb):
                artifact = _artifact(entry)
                latest[(artifact.callback, artifact.kind, artifact.basis_key)] = artifact
        rows = []
        for key, best in run.best.items():
            paths = [f"{a.callback}: {a.path}" for a in latest.values() if a.basis_key == key]
            value = best.get("value")
            rows.append([
                key,
                run.basis_dict.get(key, ""),
                "-" if value is None else f"{value:.4g}",
                "-" if best.get("epoch") is None else str(best["epoch"]),
                "; ".join(paths) or "-",
            ])
        lines = [f"Training finished: epochs {run.start_epoch + 1}-{run.epochs_done} "
                 f"in {run.duration or 0.0:.1f} s"]
        if rows:
            lines.append(format_table(rows, ["basis key", "mode", "best", "epoch", "artifacts"]))
        others = [a for a in latest.values() if a.basis_key is None]
        for artifact in others:
            lines.append(f"{artifact.callback} {artifact.kind} (epoch {artifact.epoch}): "
                         f"{artifact.path}")
        return "\n".join(lines)

    # -- infer / evaluate ------------------------------------------------------------

    def _inference_data(self, dataset: Any, batch_size: int | None) -> _Data:
        size = batch_size or self.batch_size or 32
        if isinstance(dataset, tf.data.Dataset):
            # Only a batch size passed here can contradict the dataset's own batching.
            return _prepare(dataset, size, "dataset", self.model, strict=batch_size is not None)
        if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
            return _prepare(dataset, size, "dataset", self.model)
        return _Data(dataset, None, size)

    def infer(self, dataset: Any, batch_size: int | None = None) -> Any:
        """Predict in batches; returns numpy (a list/dict of arrays for several outputs).

        ``dataset``: a ``tf.data.Dataset`` (of ``x`` or ``(x, y)``, batched or not),
        an array, or an ``(x, y)`` tuple (``y`` is ignored). Unbatched data is batched
        with ``batch_size``, else the training batch size, else 32.
        """
        data = self._inference_data(dataset, batch_size)
        if data.is_dataset:
            result = self.model.predict(data.x, verbose=0)
        else:
            result = self.model.predict(data.x, batch_size=data.batch_size, verbose=0)
        return tf.nest.map_structure(np.asarray, result)

    def evaluate(self, dataset: Any, batch_size: int | None = None) -> dict[str, float]:
        """Evaluate on a dataset of ``(x, y)`` or an ``(x, y)`` tuple: ``{metric: value}``."""
        data = self._inference_data(dataset, batch_size)
        if data.is_dataset:
            result = self.model.evaluate(data.x, verbose=0, return_dict=True)
        else:
            result = self.model.evaluate(
                data.x, data.y, batch_size=data.batch_size, verbose=0, return_dict=True
            )
        return {k: float(v) for k, v in result.items()}


def _check_folders(cbs: list[Any]) -> None:
    """Two callbacks writing one folder would overwrite each other's manifest."""
    seen: dict[str, Any] = {}
    for cb in cbs:
        folder = getattr(cb, "folder", None)
        if folder is None:
            continue
        key = os.path.abspath(folder)
        if key in seen:
            raise ValueError(
                f"callbacks {callback_label(seen[key])!r} and {callback_label(cb)!r} both "
                f"write to {folder}; give one its own folder, e.g. "
                f"{{'name': {callback_label(cb)!r}, 'folder': '{Path(folder).name}_2'}}"
            )
        seen[key] = cb


def _warn_earlier_bests(cbs: list[Any]) -> None:
    """A new run (start_epoch=0) into a used log_dir keeps that log_dir's bests: say so."""
    for cb in cbs:
        best = getattr(getattr(cb, "policy", None), "best", {})
        kept = {k: kb for k, kb in best.items() if kb.value is not None}
        if kept:
            described = ", ".join(
                f"{k}={kb.value:.4g} (epoch {kb.epoch})" for k, kb in kept.items()
            )
            warnings.warn(
                f"{callback_label(cb)!r}: {cb.folder} holds the bests of an earlier run "
                f"({described}); they are kept, so a file is written only when it beats "
                "them. Use a new log_dir to start afresh, or start_epoch to resume.",
                RuntimeWarning,
                stacklevel=3,
            )


def _manifest_entries(callback: Any) -> list[Any]:
    if callable(getattr(callback, "manifest_artifacts", None)):
        return list(callback.manifest_artifacts())
    return list(getattr(getattr(callback, "manifest", None), "artifacts", None) or [])


def _artifact(entry: Any) -> Artifact:
    if isinstance(entry, Artifact):
        return entry
    return Artifact(**{k: v for k, v in dict(entry).items() if k in _ARTIFACT_FIELDS})


__all__ = ["SAMPLE_SIZE", "TrainInfer", "dataset_batching", "resolve_callbacks"]
