"""``TrainInfer``: the seed's training wrapper around ``model.fit`` / ``predict`` / ``evaluate``.

Example::

    train_infer = TrainInfer(model, log_dir="runs/x", basis_dict={"val_loss": "min"})
    history = train_infer.train(train_ds, dev_ds, batch_size=32, epochs=10,
                                callbacks=["ckpt", {"name": "tb", "image_shape": (8, 8, 1)}],
                                teams_webhook_url=url)
    predictions = train_infer.infer(test_ds)

Data: see :mod:`cvml_core.train.data`. Callbacks: Keras callbacks, or names and dicts
built through the registry (:mod:`cvml_core.train.resolve`); what ``TrainInfer`` asks of
them beyond Keras is declared in :mod:`cvml_core.train.protocol`. The end summary and the
run's record: :mod:`cvml_core.train.summary`.

Callbacks that want sample data (:class:`~cvml_core.train.protocol.WantsSampleData`, e.g.
``tb`` for images, ``tflite`` for calibration) get the first :data:`SAMPLE_SIZE`
examples of the dev set through ``set_sample_data(x, y)`` before training, unless they
already have some.

Data checks: before the first epoch (and before any callback folder is made), the
first batch of ``train_dataset`` and ``dev_dataset`` is checked against the model's
inputs and the compiled loss (input shapes; with a sparse or one-hot categorical loss,
the label shape and class-id range): see :mod:`cvml_core.train.data_checks`. Only the first
batch is checked; multi-input/multi-output models are checked where the structure
allows it; a dataset of unknown cardinality (possibly one-shot, e.g. ``from_generator``)
is not read: only its ``element_spec`` shapes are checked.

Resume: ``start_epoch=N`` trains epochs N+1 .. ``epochs`` (Keras ``initial_epoch``) and
first calls ``restore_latest(model, max_epoch=N)`` on the callbacks that have it
(:class:`~cvml_core.train.protocol.Restores`: the ``ckpt`` callback): the first one that
returns an epoch > 0 restored the weights. Basis bests come back by themselves: each
callback reloads its ``manifest.json``.

(About 350 lines: ``TrainInfer`` alone, most of it ``train``'s argument checks and
documentation; data, callbacks and the run's record live in the modules above.)
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from cvml_core.artifacts.distribute import is_chief
from cvml_core.artifacts.storage import mask
from cvml_core.plugin_host.loader import call_hook
from cvml_core.plugin_host.notify import check_notify
from cvml_core.plugin_host.run_info import RunInfo
from cvml_core.policy.basis import validate_basis_dict
from cvml_core.policy.checks import check_folder, is_integer
from cvml_core.train.data import Data, dataset_batching, inference_data, prepare
from cvml_core.train.data_checks import check_first_batch
from cvml_core.train.protocol import (
    Restores,
    ResumesBackup,
    WaitsForBackground,
    WantsSampleData,
)
from cvml_core.train.resolve import callback_label, resolve_callbacks, warn_earlier_bests
from cvml_core.train.summary import (
    RunRecorder,
    artifacts_of,
    bests,
    new_artifacts,
    summary_text,
    tracked_basis,
)
from cvml_core.train.tf import require_tensorflow, tf

#: How many dev examples a callback that wants sample data receives.
SAMPLE_SIZE = 32


class TrainInfer:
    """Train, evaluate and predict with a compiled Keras model, the seed's way.

    :param model: a compiled Keras model.
    :param log_dir: the run folder for callbacks given by name (may also be passed
        to :meth:`train`).
    :param basis_dict: ``{metric: "min"|"max"}`` for callbacks given by name and for
        the end summary (may also be passed to :meth:`train`).
    :param storage_options: for a URL ``log_dir`` (``s3://...``), the options of its
        filesystem, passed to callbacks given by name (see :mod:`cvml_core.artifacts.storage`).
    """

    def __init__(
        self,
        model: Any,
        log_dir: str | os.PathLike[str] | None = None,
        basis_dict: Mapping[str, str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        require_tensorflow()  # tf.data: without TensorFlow, say what to install
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
        self.storage_options = storage_options
        self.basis_dict = None if basis_dict is None else validate_basis_dict(basis_dict)
        self.batch_size: int | None = None
        self.callbacks: list[Any] = []
        self.history: Any = None
        self.run: RunInfo | None = None

    @staticmethod
    def _check_log_dir(log_dir: Any) -> str | None:
        return None if log_dir is None else check_folder("log_dir", log_dir)

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
            webhook (https, or http to localhost); needs the ``cvml-teams`` plugin, which
            checks the URL before epoch 1 (:mod:`cvml_core.plugin_host.notify`).
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
        notify = check_notify({"teams": teams_webhook_url}, {"teams": "teams_webhook_url"})
        run_log_dir = self._check_log_dir(log_dir) or self.log_dir
        run_basis = validate_basis_dict(basis_dict) if basis_dict is not None else self.basis_dict

        # Data first: a bad batch size must not leave callback folders behind.
        train_data = prepare(train_dataset, batch_size, "train_dataset", self.model)
        dev_data = (
            None if dev_dataset is None
            else prepare(dev_dataset, batch_size, "dev_dataset", self.model)
        )
        for data_name, data in (("train_dataset", train_data), ("dev_dataset", dev_data)):
            if data is not None:
                check_first_batch(data_name, self.model, data.x, data.y, data.batch_size)
        cbs = resolve_callbacks(callbacks, run_log_dir, run_basis, self.storage_options)
        resumes_backup = any(
            isinstance(cb, ResumesBackup) and cb.backup_start() is not None for cb in cbs
        )
        if not start_epoch and not resumes_backup:  # else a resume
            warn_earlier_bests(cbs)
        tracked = tracked_basis(cbs)
        basis = {**tracked, **(run_basis or {})}
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

        recorder = RunRecorder({k: m for k, m in basis.items() if k not in tracked})
        earlier = artifacts_of(cbs)
        run = RunInfo(
            log_dir=None if run_log_dir is None else mask(run_log_dir),
            epochs=int(epochs),
            start_epoch=int(start_epoch),
            basis_dict=basis,
            callbacks=[callback_label(cb) for cb in cbs],
            notify=notify,
            model_name=str(getattr(self.model, "name", "") or ""),
            chief=is_chief(self.model),
            restored_epoch=restored[0],
            restored_by=restored[1],
        )
        self.callbacks, self.run = cbs, run
        call_hook("cvml_train_begin", run=run)
        fit_kwargs = train_data.fit_args()
        if dev_data is not None:
            fit_kwargs.update(dev_data.validation_args())
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
                if isinstance(cb, WaitsForBackground):
                    cb.wait_for_background(raise_error=False)  # warns, never hides exc
            try:
                self._finish(run, recorder, earlier, exc)
            except Exception as hook_exc:
                warnings.warn(
                    f"cvml_train_end failed while handling a training error: "
                    f"{type(hook_exc).__name__}: {hook_exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            raise
        self.history = history
        self._finish(run, recorder, earlier, None)
        if show_results:
            print(self.summary())
        return history

    def _hand_sample_data(self, cbs: list[Any], data: Data) -> None:
        wanting = [
            cb for cb in cbs
            if isinstance(cb, WantsSampleData) and cb.wants_sample_data
            and cb.sample_data is None
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
        restorers = [cb for cb in cbs if isinstance(cb, Restores)]
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
        recorder: RunRecorder,
        earlier: list[Any],
        error: BaseException | None,
    ) -> None:
        run.end_time = time.time()
        run.epochs_done = recorder.epochs[-1] if recorder.epochs else run.start_epoch
        run.history = {k: list(v) for k, v in recorder.history.items()}
        run.best = bests(run.basis_dict, self.callbacks, recorder)
        run.artifacts = new_artifacts(earlier, artifacts_of(self.callbacks))
        call_hook("cvml_train_end", run=run, logs=dict(recorder.logs), error=error)

    def summary(self) -> str:
        """The end-of-training table: per basis key, best value, epoch and artifact paths."""
        if self.run is None:
            return "No training run yet."
        return summary_text(self.run, artifacts_of(self.callbacks))

    # -- infer / evaluate ------------------------------------------------------------

    def _inference_data(self, dataset: Any, batch_size: int | None) -> Data:
        return inference_data(dataset, batch_size, self.batch_size or 32, self.model)

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




__all__ = ["SAMPLE_SIZE", "TrainInfer", "dataset_batching", "resolve_callbacks"]
