"""``TensorboardCallback``: TensorBoard scalars, best-so-far values and sample images.

Writes under ``log_dir/tb`` (the callback's folder), in two TensorBoard runs:

* ``tb/train``: ``epoch_<metric>`` for every log entry without the ``val_`` prefix,
  ``epoch_learning_rate``, ``batch_<metric>`` (``update_freq``), weight histograms
  (``histogram_freq``) and the text summaries ``run/model`` and ``run/arguments``.
* ``tb/validation``: ``epoch_<metric>`` for every ``val_<metric>`` entry (so ``loss``
  and ``val_loss`` share the chart ``epoch_loss``, as with ``keras.callbacks.TensorBoard``)
  and the sample images ``samples/grid`` with their labels ``samples/labels``.

``best/<key>`` (the best value so far) and ``best_epoch/<key>`` go to the run of
the key (``val_*`` keys to ``validation``). The step of every epoch summary is the
1-based epoch number; steps never repeat, also across callback objects (a resumed
run in a new process reads the last written steps from the event files); see the
package README.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from cvml_core.basis import is_integer
from cvml_core.callback import BasisCallback
from cvml_tb import images as img
from cvml_tb import summaries
from cvml_tb.steps import last_written_steps

TRAIN, VALIDATION = "train", "validation"
IMAGE_TAG, LABELS_TAG = "samples/grid", "samples/labels"
ARTIFACT_KIND = "tensorboard-images"


class TensorboardStepWarning(UserWarning):
    """A fit's steps were shifted after the steps already written, to avoid duplicates."""


def _scalar(value: Any) -> float | None:
    """``value`` as a float if it is one number, else None (strings, arrays...)."""
    try:
        array = np.asarray(value)
        if array.size != 1 or not np.issubdtype(array.dtype, np.number):
            return None
        return float(array.reshape(()))
    except (TypeError, ValueError):
        return None


class TensorboardCallback(BasisCallback):
    """Writes TensorBoard scalars, best-so-far values and sample images.

    :param log_dir: the run's folder; the event files go to ``log_dir/tb/{train,validation}``.
    :param basis_dict: ``{metric: "min"|"max"}``; sample images are written on due epochs
        where a key improved, and on the first epoch of each ``fit``.
    :param skip_from_start, frequency, min_delta: the basis schedule (see ``BasisCallback``).
    :param image_shape: ``(H, W[, C])`` the inputs are reshaped to for display (flat
        inputs); C is 1, 3 or 4. Giving it turns image logging on.
    :param sample_data: ``(x, y)``, ``x`` or a dataset of batches to draw the images
        from. Data given here wins over the dev sample ``TrainInfer`` hands over
        through ``set_sample_data``. Giving it turns image logging on.
    :param max_images: how many samples the grid shows (the first ones); 0 turns images off.
    :param log_images: force image logging on or off; None (default) means on when
        ``image_shape`` or ``sample_data`` is given.
    :param class_names: names shown for class indices in the label table.
    :param update_freq: ``"epoch"`` (default), ``"batch"`` or N: also write
        ``batch_<metric>`` every N training batches (step: the optimizer's iteration).
    :param histogram_freq: write weight histograms every N epochs (0: never).
    :param write_model_summary: write ``model.summary()`` and the arguments as text.

    Example::

        cb = TensorboardCallback("runs/x", {"val_loss": "min"}, image_shape=(8, 8, 1),
                                 sample_data=(x_val, y_val))
        model.fit(x, y, validation_data=(x_val, y_val), epochs=5, callbacks=[cb])
        # tensorboard --logdir runs/x/tb
    """

    name = "tb"

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        basis_dict: Mapping[str, str],
        skip_from_start: int = 0,
        frequency: int = 1,
        min_delta: float = 0.0,
        image_shape: Sequence[int] | None = None,
        sample_data: Any = None,
        max_images: int = 8,
        log_images: bool | None = None,
        class_names: Sequence[str] | None = None,
        update_freq: str | int = "epoch",
        histogram_freq: int = 0,
        write_model_summary: bool = True,
    ) -> None:
        super().__init__(log_dir, basis_dict, skip_from_start, frequency, min_delta)
        self.image_shape = img.check_image_shape(image_shape)
        if not is_integer(max_images) or max_images < 0:
            raise ValueError(
                "max_images must be an integer >= 0 (0 turns images off). "
                f"Received: max_images={max_images!r}"
            )
        if log_images not in (None, True, False):
            raise ValueError(
                "log_images must be True, False or None (auto). "
                f"Received: log_images={log_images!r}"
            )
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and (not is_integer(update_freq) or update_freq < 1):
            raise ValueError(
                "update_freq must be 'epoch', 'batch' or an integer >= 1 (write batch "
                f"scalars every N batches). Received: update_freq={update_freq!r}"
            )
        if not is_integer(histogram_freq) or histogram_freq < 0:
            raise ValueError(
                "histogram_freq must be an integer >= 0 (0: no histograms). "
                f"Received: histogram_freq={histogram_freq!r}"
            )
        if log_images is None:
            log_images = image_shape is not None or sample_data is not None
        self.log_images = bool(log_images) and max_images > 0
        # Instance value of BasisCallback's class flag: TrainInfer hands a dev sample
        # only to callbacks that will draw images.
        self.wants_sample_data = self.log_images
        self.max_images = max_images
        self.class_names = list(class_names) if class_names is not None else None
        self.update_freq = update_freq
        self.histogram_freq = histogram_freq
        self.write_model_summary = write_model_summary
        self.run_dirs = {TRAIN: self.folder / TRAIN, VALIDATION: self.folder / VALIDATION}
        self._writers: dict[str, Any] = {}
        self._writers_lock = threading.Lock()
        self._samples: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
        self._steps_read = False  # the event files already in the folder were read
        self._last_step = 0  # the highest epoch step written (by any callback object)
        self._step_offset = 0
        self._wrote_epochs = False  # this object wrote epoch steps
        self._last_batch_step = 0  # the highest batch step written
        self._batch_offset = 0
        self._fit_batches = 0  # batches seen in the current fit
        self._fit_epochs = 0  # epochs seen in the current fit
        self._improved: list[str] = []
        self._texts_written = False
        self._batches = 0
        self._explicit_samples = sample_data is not None
        if sample_data is not None:
            self.sample_data = img.take_samples(sample_data, max_images or 1)
            if self.log_images:
                self._prepare_samples()  # a bad image_shape fails here, not mid-training
        if update_freq != "epoch":
            # Only then does Keras see a batch hook: a default one keeps its fast
            # asynchronous batch dispatch.
            self.on_train_batch_end = self._log_batch  # type: ignore[method-assign]

    # -- sample data -----------------------------------------------------------------

    def set_sample_data(self, x: Any, y: Any = None) -> None:
        """Samples from ``TrainInfer``; ignored when ``sample_data`` was given explicitly."""
        if self._explicit_samples:
            return
        self.sample_data = (x, y)
        self._samples = None

    def _prepare_samples(self) -> None:
        """Take the first ``max_images`` samples and check they are images."""
        if self._samples is not None:
            return
        if self.sample_data is None:
            raise ValueError(
                f"{type(self).__name__}: image logging is on (image_shape="
                f"{self.image_shape}) but no sample data was given. Pass "
                "sample_data=(x, y) to the callback, train with TrainInfer (it hands a "
                "dev sample to the callback), or pass log_images=False to write scalars "
                "only. Received: sample_data=None"
            )
        x, y = img.take_samples(self.sample_data, self.max_images)
        if len(x) == 0:
            raise ValueError("sample_data holds no samples. Received: 0 samples")
        display = img.to_uint8(img.display_images(x, self.image_shape))
        self._samples = (x, display, y)

    # -- writers ---------------------------------------------------------------------

    def _writer(self, run: str) -> Any:
        with self._writers_lock:  # the training thread (batch scalars) and the worker
            if run not in self._writers:
                self._writers[run] = tf.summary.create_file_writer(str(self.run_dirs[run]))
            return self._writers[run]

    def _write(self, run: str, step: int, *parts: Any) -> None:
        """Write the summaries ``parts`` of one run and step with one TensorFlow op."""
        parts = tuple(p for p in parts if p.value)
        if not parts:
            return
        with self._writer(run).as_default():
            tf.summary.experimental.write_raw_pb(summaries.merge(*parts), step=step)

    def _flush(self) -> None:
        with self._writers_lock:
            writers = list(self._writers.values())
        for writer in writers:
            writer.flush()

    def _close(self) -> None:
        with self._writers_lock:
            writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()

    # -- Keras hooks -----------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._fit_epochs = 0
        self._fit_batches = 0
        if self.chief and not self._steps_read:
            # What an earlier callback object (a crashed or finished process) wrote here.
            written = last_written_steps(self.run_dirs.values())
            self._last_step = max(self._last_step, written.epoch)
            self._last_batch_step = max(self._last_batch_step, written.batch)
            self._steps_read = True
        if self.log_images:
            self._prepare_samples()
        if self.chief and self.write_model_summary and not self._texts_written:
            texts = self._texts()
            self.run_in_background("tb-texts", lambda: self._write_texts(texts))
            self._texts_written = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Snapshot what the epoch logs on the training thread; the worker writes it."""
        if self._fit_epochs == 0 and self.chief:
            # A fit that numbers its epochs from below what is written continues after it.
            self._step_offset = max(0, self._last_step - epoch)
            if self._step_offset and (epoch > 0 or not self._wrote_epochs):
                # Not for another fit of this object from epoch 1 (the documented use).
                warnings.warn(
                    f"{type(self).__name__}: {self.folder} already holds epoch steps up "
                    f"to {self._last_step}, and this fit starts at epoch {epoch + 1}; to "
                    f"write no step twice, its epochs go to steps {self._last_step + 1}, "
                    f"{self._last_step + 2}, ... (epoch + {self._step_offset}). Use a new "
                    "log_dir to keep steps equal to epochs.",
                    TensorboardStepWarning,
                    stacklevel=2,
                )
        self._fit_epochs += 1
        self._improved = []
        super().on_epoch_end(epoch, logs)  # runs the basis policy, may call on_improved
        if not self.chief:
            return
        step = epoch + 1 + self._step_offset
        self._last_step = max(self._last_step, step)
        self._wrote_epochs = True
        logs = dict(logs or {})
        improved = list(self._improved)
        scalars = self._epoch_scalars(logs)
        weights = None
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            weights = [
                (str(getattr(w, "path", w.name)).replace(":", "_"), np.asarray(w.numpy()))
                for w in self.model.weights
            ]
        outputs = None
        if self.log_images and (self._fit_epochs == 1 or improved):
            assert self._samples is not None
            outputs = self.model.predict_on_batch(self._samples[0])

        def job() -> None:
            artifacts = []
            pictures: list[Any] = []
            if outputs is not None:
                artifact, pictures = self._draw(epoch + 1, step, logs, outputs, improved)
                artifacts.append(artifact)
            self._write(TRAIN, step, summaries.scalars(scalars[TRAIN]))
            self._write(VALIDATION, step, summaries.scalars(scalars[VALIDATION]), *pictures)
            if weights is not None:
                with self._writer(TRAIN).as_default():
                    for tag, value in weights:
                        tf.summary.histogram(f"{tag}/histogram", value, step=step)
            self._flush()
            if artifacts or improved:  # improved: keep the bests for a resumed run
                self.record(artifacts)

        self.run_in_background(f"tb-epoch-{step}", job)

    def on_improved(self, epoch: int, improved_keys: list[str], logs: dict[str, Any]) -> None:
        self._improved = list(improved_keys)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        try:
            super().on_train_end(logs)  # waits for the worker and announces its images
        finally:
            self._close()

    def _log_batch(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """``on_train_batch_end`` when ``update_freq`` is a number of batches."""
        if not self.chief:
            return
        self._batches += 1
        self._fit_batches += 1
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        # The optimizer's iteration continues across fits and resumes; a plain count
        # of batches stands in for a model without one.
        iteration = int(np.asarray(iterations)) if iterations is not None else self._batches
        if self._fit_batches == 1:
            # A model restored from an earlier checkpoint than the last batch written
            # (a resume after a crash) continues after it, as the epoch steps do.
            self._batch_offset = max(0, self._last_batch_step - iteration + 1)
            if self._batch_offset:
                warnings.warn(
                    f"{type(self).__name__}: {self.folder} already holds batch steps up "
                    f"to {self._last_batch_step}, and the optimizer's iteration restarts "
                    f"at {iteration}; to write no step twice, batch scalars go to step "
                    f"iteration + {self._batch_offset}.",
                    TensorboardStepWarning,
                    stacklevel=2,
                )
        if iteration % int(self.update_freq) != 0:
            return
        step = iteration + self._batch_offset
        self._last_batch_step = max(self._last_batch_step, step)
        values = {}
        for key, value in (logs or {}).items():
            number = _scalar(value)
            if number is not None:
                values[f"batch_{key}"] = number
        self._write(TRAIN, step, summaries.scalars(values))

    # -- what is written -------------------------------------------------------------

    def _learning_rate(self) -> float | None:
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
        rate = getattr(optimizer, "learning_rate", None)
        if rate is None:
            return None
        if callable(rate):  # a schedule object (Keras 2 style)
            rate = rate(optimizer.iterations)
        return _scalar(rate)

    def _epoch_scalars(self, logs: dict[str, Any]) -> dict[str, dict[str, float]]:
        """``{run: {tag: value}}`` of one epoch: logs, learning rate, bests."""
        runs: dict[str, dict[str, float]] = {TRAIN: {}, VALIDATION: {}}
        for key, value in logs.items():
            number = _scalar(value)
            if number is None:
                continue
            if key.startswith("val_"):
                runs[VALIDATION][f"epoch_{key[4:]}"] = number
            else:
                runs[TRAIN][f"epoch_{key}"] = number
        if "epoch_learning_rate" not in runs[TRAIN]:
            rate = self._learning_rate()
            if rate is not None:
                runs[TRAIN]["epoch_learning_rate"] = rate
        for key, best in self.policy.best.items():
            if best.value is None or best.epoch is None:
                continue
            run = VALIDATION if key.startswith("val_") else TRAIN
            runs[run][f"best/{key}"] = best.value
            runs[run][f"best_epoch/{key}"] = float(best.epoch)
        return runs

    def _draw(
        self, number: int, step: int, logs: dict[str, Any], outputs: Any, improved: list[str]
    ) -> tuple[Any, list[Any]]:
        """The grid and label table summaries of ``outputs`` (on the worker), and the artifact."""
        assert self._samples is not None
        _, display, y = self._samples
        if isinstance(outputs, Mapping):
            outputs = next(iter(outputs.values()))
        elif isinstance(outputs, (list, tuple)):
            outputs = outputs[0]
        samples = img.describe(display, outputs, y, self.class_names)
        picture = img.grid(samples.cells, samples.colors)
        why = f"improved: {', '.join(improved)}" if improved else "first epoch of fit"
        legend = (
            f"{len(samples.cells)} samples at epoch {number}"
            + (f" (step {step})" if step != number else "")
            + f" ({why}). "
            + samples.table.splitlines()[0]
        )
        parts = [
            summaries.image(IMAGE_TAG, picture, description=legend),
            summaries.text(LABELS_TAG, samples.table),
        ]
        artifact = self.artifact(
            ARTIFACT_KIND,
            self.run_dirs[VALIDATION],
            number,
            logs,
            improved[0] if improved else None,
            tags=[IMAGE_TAG, LABELS_TAG],
            step=step,
            images=len(samples.cells),
            improved=improved,
            segmentation=samples.segmentation,
            size=[int(picture.shape[0]), int(picture.shape[1])],
        )
        return artifact, parts

    def _texts(self) -> dict[str, str]:
        """The model summary and the run's arguments, as Markdown (training thread)."""
        lines: list[str] = []
        try:
            self.model.summary(print_fn=lambda text, *a, **k: lines.append(str(text)))
            model_text = "\n".join(lines)
        except ValueError as exc:  # a model that is not built yet
            model_text = f"(no summary: {exc})"
        arguments = {
            "basis_dict": self.policy.basis,
            "skip_from_start": self.policy.skip_from_start,
            "frequency": self.policy.frequency,
            "min_delta": self.policy.min_delta,
            "image_shape": self.image_shape,
            "log_images": self.log_images,
            "max_images": self.max_images,
            "update_freq": self.update_freq,
            "histogram_freq": self.histogram_freq,
            **{f"fit.{k}": v for k, v in sorted((self.params or {}).items())},
        }
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            arguments["optimizer"] = type(optimizer).__name__
        table = "\n".join(
            ["| argument | value |", "|---|---|"]
            + [f"| {k} | `{v}` |" for k, v in arguments.items()]
        )
        # indented: Markdown keeps the summary's table of boxes as a code block
        indented = "\n".join("    " + line for line in model_text.splitlines())
        return {"run/model": indented, "run/arguments": table}

    def _write_texts(self, texts: Mapping[str, str]) -> None:
        self._write(TRAIN, 0, *(summaries.text(tag, text) for tag, text in texts.items()))
        self._flush()
