"""``TensorboardCallback``: TensorBoard scalars, best-so-far values and sample images.

Writes under ``log_dir/tb`` (the callback's folder; ``folder=`` renames it) what
``keras.callbacks.TensorBoard`` writes, with the same tags, run names and steps, so
that runs of either callback overlay in one chart, plus what Keras' callback does not:

* ``train``: ``epoch_<metric>`` for every log entry without the ``val_`` prefix and
  ``epoch_learning_rate`` (step: the 0-based epoch, as Keras), ``batch_<metric>``
  (``update_freq``; step: the optimizer's iteration), weight histograms
  (``histogram_freq``, on Keras' epochs), the model's conceptual graph ``keras`` (the
  Graphs tab) and, added, the texts ``run/model``, ``run/arguments`` and ``basis/best``.
* ``validation``: ``epoch_<metric>`` for every ``val_<metric>`` entry (so ``loss`` and
  ``val_loss`` share the chart ``epoch_loss``) and ``evaluation_<metric>_vs_iterations``
  (step: the optimizer's iteration), as Keras; added: the sample images ``best/samples``
  and their table ``samples/labels``.
* ``epoch_<metric>/best``: the best-so-far value of basis key ``<metric>`` (or
  ``val_<metric>``), in the run of the key, so it sorts after the curves and sits in the
  group of its metric. The epoch of each best is text (``basis/best``), never a scalar
  that TensorBoard would smooth.

Steps never repeat, also across callback objects (a resumed run in a new process
reads the last written steps from the event files); see the package README.

On an object store (``log_dir`` a URL), which has no appends, each epoch's events go
to a new event file that is closed and uploaded as a new object at the epoch's end;
TensorBoard reads the files of a run folder as one run, and the bytes sent per epoch
do not grow with the run.
"""

from __future__ import annotations

import os
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvml_core.artifacts.callback import BasisCallback
from cvml_core.keras_compat import keras
from cvml_core.policy.basis import is_integer
from cvml_core.policy.checks import check_bool, check_int
from cvml_tb import images as img
from cvml_tb import summaries
from cvml_tb.events import EventWriter
from cvml_tb.steps import EVENT_FILE_MARK, WrittenSteps, last_written_steps

TRAIN, VALIDATION = "train", "validation"
# The images' tags sort before Keras' ``epoch_*`` ones, so TensorBoard's Time Series
# page opens their group ("best") first: the exact bests and the samples in view.
IMAGE_TAG, LABELS_TAG = "best/samples", "samples/labels"
BEST_IMAGE_TAG, BEST_TEXT_TAG = "best/values", "basis/best"
GRAPH_TAG = "keras"
ARTIFACT_KIND = "tensorboard-images"
#: The samples are picked (to cover the classes) from the first max(POOL, 4 x max_images).
POOL = 32
#: Model classes whose conceptual graph Keras' TensorBoard callback writes.
GRAPH_MODELS = ("Functional", "Sequential")


def _keras_version() -> tuple[int, ...]:
    """The running Keras' version as numbers (tf_keras reports 2.x)."""
    parts = []
    for part in str(getattr(keras, "__version__", "0")).split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


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


def metric_name(key: str) -> str:
    """The metric a log key is a value of: ``val_loss`` -> ``loss``."""
    return key[4:] if key.startswith("val_") else key


def run_of(key: str) -> str:
    """The TensorBoard run of a log key: ``val_*`` keys go to ``validation``."""
    return VALIDATION if key.startswith("val_") else TRAIN


def best_tag(key: str) -> str:
    """The tag of basis key ``key``'s best-so-far value: ``epoch_<metric>/best``."""
    return f"epoch_{metric_name(key)}/best"


class TensorboardCallback(BasisCallback):
    """Writes TensorBoard scalars as Keras does, best-so-far values and sample images.

    :param log_dir: the run's folder; the event files go to
        ``log_dir/<folder>/{train,validation}``.
    :param basis_dict: ``{metric: "min"|"max"}``; each key's best so far is written, and
        sample images on due epochs where a key improved (and on the first epoch of
        each ``fit``).
    :param image_shape: ``(H, W[, C])`` the inputs are reshaped to for display (flat
        inputs); C is 1, 3 or 4. Giving it turns image logging on.
    :param sample_data: ``(x, y)``, ``x`` or a dataset of batches to draw the images
        from. Data given here wins over the dev sample ``TrainInfer`` hands over
        through ``set_sample_data``. Giving it turns image logging on.
    :param max_images: how many samples the grid shows (picked to cover the classes);
        0 turns images off.
    :param log_images: force image logging on or off; None (default) means on when
        ``image_shape`` or ``sample_data`` is given.
    :param class_names: names shown for class indices in the captions and tables: a
        list (or tuple) of str, one per class index; a single str is refused.
    :param update_freq: ``"epoch"`` (default), ``"batch"`` or N: also write
        ``batch_<metric>`` every N training batches (step: the optimizer's iteration).
    :param histogram_freq: write weight histograms every N epochs (0: never), on the
        0-based epochs Keras writes them (0, N, 2N, ...).
    :param write_graph: write the model's conceptual graph (Graphs tab), as Keras does.
    :param write_model_summary: write ``model.summary()`` and the arguments as text
        (True or False).
    :param schedule: ``skip_from_start``, ``frequency``, ``min_delta`` and ``folder``,
        as for :class:`~cvml_core.artifacts.callback.BasisCallback`.

    Example::

        cb = TensorboardCallback("runs/x", {"val_loss": "min"}, image_shape=(8, 8, 1),
                                 sample_data=(x_val, y_val))
        model.fit(x, y, validation_data=(x_val, y_val), epochs=5, callbacks=[cb])
        # tensorboard --logdir runs/x
    """

    name = "tb"

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        basis_dict: Mapping[str, str],
        *,
        image_shape: Sequence[int] | None = None,
        sample_data: Any = None,
        max_images: int = 8,
        log_images: bool | None = None,
        class_names: Sequence[str] | None = None,
        update_freq: str | int = "epoch",
        histogram_freq: int = 0,
        write_graph: bool = True,
        write_model_summary: bool = True,
        **schedule: Any,
    ) -> None:
        super().__init__(log_dir, basis_dict, **schedule)
        self.image_shape = img.check_image_shape(image_shape)
        max_images = check_int("max_images", max_images, 0, "0 turns images off")
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
        histogram_freq = check_int("histogram_freq", histogram_freq, 0, "0: no histograms")
        if class_names is not None and (
            isinstance(class_names, (str, bytes))
            or not isinstance(class_names, (Sequence, np.ndarray))
            or not all(isinstance(n, str) for n in class_names)
        ):
            raise ValueError(
                "class_names must be a list of str, one name per class index (e.g. "
                "['cat', 'dog']), or None; a single str is not allowed. Received: "
                f"class_names={class_names!r} of type {type(class_names).__name__}"
            )
        write_model_summary = check_bool("write_model_summary", write_model_summary)
        write_graph = check_bool("write_graph", write_graph)
        if log_images is None:
            log_images = image_shape is not None or sample_data is not None
        self.log_images = bool(log_images) and max_images > 0
        # Instance value of BasisCallback's class flag: TrainInfer hands a dev sample
        # only to callbacks that will draw images.
        self.wants_sample_data = self.log_images
        self.max_images = max_images
        self.pool = max(POOL, 4 * max_images)
        self.class_names = list(class_names) if class_names is not None else None
        self.update_freq = update_freq
        self.histogram_freq = histogram_freq
        self.write_graph = bool(write_graph)
        self.write_model_summary = bool(write_model_summary)
        self.run_dirs = {TRAIN: self.folder / TRAIN, VALIDATION: self.folder / VALIDATION}
        self._writers: dict[str, Any] = {}
        self._writers_lock = threading.Lock()
        self._described: set[tuple[str, str]] = set()  # (run, tag) given a description
        # the sample pool: inputs, their display images, labels, class indices (or None)
        self._samples: tuple[np.ndarray, np.ndarray, Any, list[int] | None] | None = None
        self._draws = 0  # pictures drawn by this object (the classes rotate with it)
        self._images_on = False  # this fit draws images
        self._warned_no_samples = False
        self._steps_read = False  # the event files already in the folder were read
        self._last_step = -1  # the highest epoch step written (by any callback object)
        self._step_offset = 0
        self._wrote_epochs = False  # this object wrote epoch steps
        self._last_iteration = 0  # the highest iteration step written
        self._iteration_offset = 0
        self._iteration_start: int | None = None  # the optimizer's iteration at train begin
        self._iteration_warned = False
        self._in_fit = False
        self._evaluations: list[tuple[int, dict[str, float]]] = []  # written with the epoch
        self._fit_epochs = 0  # epochs seen in the current fit
        self._texts_written = False
        self._batches = 0
        self._explicit_samples = sample_data is not None
        if sample_data is not None:
            self.sample_data = img.take_samples(sample_data, self.pool)
            if self.log_images:
                self._prepare_samples()  # a bad image_shape fails here, not mid-training
        if update_freq != "epoch":
            # Only then does Keras see a batch hook: a default one keeps its fast
            # asynchronous batch dispatch.
            self.on_train_batch_end = self._log_batch  # type: ignore[method-assign]

    # -- sample data -----------------------------------------------------------------

    @classmethod
    def demo_options(cls, demo: Any) -> dict[str, Any]:
        return {"image_shape": demo.image_shape, "class_names": list(demo.class_names)}

    def demo_report(self, log_dir: Path) -> list[str]:
        return ["Look at the run in TensorBoard:", f"  tensorboard --logdir {log_dir}"]

    def set_sample_data(self, x: Any, y: Any = None) -> None:
        """Samples from ``TrainInfer``; ignored when ``sample_data`` was given explicitly."""
        if self._explicit_samples:
            return
        self.sample_data = (x, y)
        self._samples = None

    def _prepare_samples(self) -> None:
        """Keep the sample pool (with class labels: all of it, else the first
        ``max_images``) and check that its inputs are images."""
        if self._samples is not None:
            return
        x, y = img.take_samples(self.sample_data, self.pool)
        if len(x) == 0:
            raise ValueError("sample_data holds no samples. Received: 0 samples")
        labels = img.class_indices(y)
        if labels is None or len(labels) != len(x):
            x, y, labels = x[: self.max_images], None if y is None else y[: self.max_images], None
        display = img.to_uint8(img.display_images(x, self.image_shape))
        self._samples = (x, display, y, labels)

    # -- writers ---------------------------------------------------------------------

    def _writer(self, run: str) -> Any:
        with self._writers_lock:  # the training thread (batch scalars) and the worker
            if run not in self._writers:
                self._writers[run] = EventWriter(self.run_dirs[run])
            return self._writers[run]

    def _write(self, run: str, step: int, *parts: Any) -> None:
        """Write the summaries ``parts`` of one run and step as one event."""
        parts = tuple(p for p in parts if p.value)
        if not parts:
            return
        self._writer(run).write(step, summaries.merge(*parts))

    def _first_time(self, run: str, tag: str) -> bool:
        """Whether ``tag`` of ``run`` is new in this fit's event file (give it a description)."""
        with self._writers_lock:
            if (run, tag) in self._described:
                return False
            self._described.add((run, tag))
            return True

    def _flush(self) -> None:
        with self._writers_lock:
            writers = list(self._writers.values())
        for writer in writers:
            writer.flush()

    def _close(self) -> None:
        with self._writers_lock:
            writers, self._writers = self._writers, {}
            self._described = set()
        for writer in writers.values():
            writer.close()

    def _ship(self) -> None:
        """On an object store: close the event files and upload each as a new object
        (the next write opens new files); a local folder keeps its open files."""
        if not self.store.is_remote:
            return
        self._close()
        for run, folder in self.run_dirs.items():
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if EVENT_FILE_MARK in path.name:
                    self.store.child(run).upload(path, path.name)
                    path.unlink()

    def _written_steps(self) -> WrittenSteps:
        """The last steps in this folder's event files (fetched from an object store)."""
        if not self.store.is_remote:
            return last_written_steps(self.run_dirs.values())
        with tempfile.TemporaryDirectory(prefix="cvml-tb-") as scratch:
            folders = []
            for run in self.run_dirs:
                store, folder = self.store.child(run), Path(scratch) / run
                folder.mkdir()
                for name in sorted(store.names()):
                    if EVENT_FILE_MARK in name:
                        store.fetch(name, folder / name)
                folders.append(folder)
            return last_written_steps(folders)

    # -- Keras hooks -----------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._fit_epochs = 0
        self._in_fit = True
        self._evaluations = []
        if self.chief and not self._steps_read:
            # What an earlier callback object (a crashed or finished process) wrote here.
            written = self._written_steps()
            self._last_step = max(self._last_step, written.epoch)
            self._last_iteration = max(self._last_iteration, written.iteration)
            self._steps_read = True
        # A model restored from an earlier checkpoint than the last iteration written
        # (a resume after a crash) continues after it, as the epoch steps do.
        self._iteration_start = self._iteration() if self.chief else None
        start = self._iteration_start or 0
        self._iteration_offset = max(0, self._last_iteration - start)
        self._iteration_warned = False
        self._images_on = self.log_images and self._check_samples()
        if self.chief and not self._texts_written:
            texts = self._texts() if self.write_model_summary else {}
            graph = self._graph() if self.write_graph else None
            self.run_in_background("tb-texts", lambda: self._write_texts(texts, graph))
            self._texts_written = True

    def _check_samples(self) -> bool:
        """Prepare the samples; without any, warn once and draw no images."""
        if self.sample_data is None:
            if not self._warned_no_samples:
                warnings.warn(
                    f"{type(self).__name__}: image logging is on (image_shape="
                    f"{self.image_shape}) but no sample data was given, so this callback "
                    "writes scalars only. To get sample images, pass sample_data=(x, y) "
                    "to the callback or train with cvml_core.TrainInfer (it hands the "
                    "callback a dev sample); log_images=False turns images off without "
                    "this warning.",
                    UserWarning,
                    stacklevel=3,
                )
                self._warned_no_samples = True
            return False
        self._prepare_samples()
        return True

    def _iteration(self) -> int | None:
        """The optimizer's iteration count, or None for a model without one."""
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is None:
            return None
        try:  # .numpy(): also a tf.distribute variable's local value
            value = iterations.numpy() if hasattr(iterations, "numpy") else iterations
            return int(np.asarray(value))
        except (TypeError, ValueError):
            return None

    def _iteration_step(self, iteration: int) -> int:
        """The step of an iteration-axis scalar (shifted after what is written)."""
        if self._iteration_offset and not self._iteration_warned:
            warnings.warn(
                f"{type(self).__name__}: {self.folder} already holds iteration steps "
                f"(batch_* and evaluation_*_vs_iterations) up to {self._last_iteration}, "
                f"and the optimizer's iteration restarts at {self._iteration_start}; to "
                "write no step twice, these scalars go to step iteration + "
                f"{self._iteration_offset}.",
                TensorboardStepWarning,
                stacklevel=3,
            )
            self._iteration_warned = True
        step = iteration + self._iteration_offset
        self._last_iteration = max(self._last_iteration, step)
        return step

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        """``evaluation_<metric>_vs_iterations`` at the optimizer's iteration, as Keras."""
        if not self.chief or not self._in_fit:
            return
        iteration = self._iteration()
        if iteration is None:
            return
        values = {}
        for key, value in (logs or {}).items():
            number = _scalar(value)
            if number is not None:
                values[f"evaluation_{key}_vs_iterations"] = number
        if values:
            self._evaluations.append((self._iteration_step(iteration), values))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Snapshot what the epoch logs on the training thread; the worker writes it."""
        if self._fit_epochs == 0 and self.chief:
            # A fit that numbers its epochs from below what is written continues after it.
            self._step_offset = max(0, self._last_step + 1 - epoch)
            if self._step_offset and (epoch > 0 or not self._wrote_epochs):
                # Not for another fit of this object from epoch 1 (the documented use).
                warnings.warn(
                    f"{type(self).__name__}: {self.folder} already holds epoch steps up "
                    f"to {self._last_step}, and this fit starts at epoch {epoch + 1} "
                    f"(step {epoch}); to write no step twice, its epochs go to steps "
                    f"{self._last_step + 1}, {self._last_step + 2}, ... (step = 0-based "
                    f"epoch + {self._step_offset}). Use a new log_dir to keep Keras' steps.",
                    TensorboardStepWarning,
                    stacklevel=2,
                )
        self._fit_epochs += 1
        before = {key: (b.value, b.epoch) for key, b in self.policy.best.items()}
        super().on_epoch_end(epoch, logs)  # runs the basis policy (on every process)
        improved = [k for k, b in self.policy.best.items() if (b.value, b.epoch) != before[k]]
        outputs = None
        draw = self._draws
        if self._images_on and (self._fit_epochs == 1 or improved):
            # On every process: under a distribution the prediction is collective. The
            # whole pool, when it has class labels, to find the mistakes to show first.
            assert self._samples is not None
            outputs = self.model.predict_on_batch(self._samples[0])
            self._draws += 1
        if not self.chief:
            return
        step = epoch + self._step_offset
        self._last_step = max(self._last_step, step)
        self._wrote_epochs = True
        logs = dict(logs or {})
        scalars = self._epoch_scalars(logs)
        evaluations, self._evaluations = self._evaluations, []
        # Keys without a best before this epoch have their first one, not an improvement.
        first = [k for k in improved if before[k][0] is None]
        bests = self._bests(epoch + 1, improved) if improved else None
        weights = None
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            weights = self._weights()

        def job() -> None:
            artifacts = []
            pictures: list[Any] = []
            if outputs is not None:
                artifact, pictures = self._draw(
                    epoch + 1, step, logs, outputs, improved, first, draw
                )
                artifacts.append(artifact)
            train_parts = [self._scalar_summary(TRAIN, scalars[TRAIN])]
            if bests is not None:
                table, lines = bests
                train_parts.append(summaries.text(BEST_TEXT_TAG, table))
                train_parts.append(summaries.image(
                    BEST_IMAGE_TAG, img.text_picture(lines),
                    description=self._bests_description()
                    if self._first_time(TRAIN, BEST_IMAGE_TAG) else None,
                ))
            self._write(TRAIN, step, *train_parts)
            self._write(
                VALIDATION, step, self._scalar_summary(VALIDATION, scalars[VALIDATION]),
                *pictures,
            )
            self._write_all(evaluations)
            if weights is not None:
                self._write(TRAIN, step, *(summaries.histogram(t, v) for t, v in weights))
            self._flush()
            self._ship()
            if artifacts or improved:  # improved: keep the bests for a resumed run
                self.record(artifacts)

        self.run_in_background(f"tb-epoch-{epoch + 1}", job)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = False
        evaluations, self._evaluations = self._evaluations, []
        if evaluations and self.chief:  # a validation after the last epoch end
            self.run_in_background("tb-evaluations", lambda: self._write_all(evaluations))
        try:
            super().on_train_end(logs)  # waits for the worker and announces its images
        finally:
            self._close()
            if self.chief:
                self._ship()

    def _write_all(self, evaluations: list[tuple[int, dict[str, float]]]) -> None:
        for step, values in evaluations:
            self._write(VALIDATION, step, summaries.scalars(values))

    def _log_batch(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """``on_train_batch_end`` when ``update_freq`` is a number of batches."""
        if not self.chief:
            return
        self._batches += 1
        # The optimizer's iteration continues across fits and resumes; a plain count
        # of batches stands in for a model without one.
        iteration = self._iteration()
        if iteration is None:
            iteration = self._batches
        if iteration % int(self.update_freq) != 0:
            return
        step = self._iteration_step(iteration)
        values = {}
        for key, value in (logs or {}).items():
            number = _scalar(value)
            if number is not None:
                values[f"batch_{key}"] = number
        self._write(TRAIN, step, summaries.scalars(values))

    # -- what is written -------------------------------------------------------------

    def _learning_rates(self) -> dict[str, float]:
        """``{name: rate}`` as Keras' TensorBoard callback collects them from the optimizer."""
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
        if optimizer is None:
            return {}
        inner = getattr(optimizer, "optimizers", None)
        if inner:
            rates = {}
            for each in inner:
                rate = self._rate(each)
                if rate is not None:
                    rates[f"learning_rate_{each.name}"] = rate
            return rates
        rate = self._rate(optimizer)
        return {} if rate is None else {"learning_rate": rate}

    @staticmethod
    def _rate(optimizer: Any) -> float | None:
        rate = getattr(optimizer, "learning_rate", None)
        if rate is None:
            return None
        if callable(rate):  # a schedule object (Keras 2 style)
            rate = rate(optimizer.iterations)
        return _scalar(rate)

    def _epoch_scalars(self, logs: dict[str, Any]) -> dict[str, dict[str, float]]:
        """``{run: {tag: value}}`` of one epoch: the logs, learning rates, bests."""
        runs: dict[str, dict[str, float]] = {TRAIN: {}, VALIDATION: {}}
        train_logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
        train_logs.update(self._learning_rates())  # as Keras: the optimizer's value wins
        val_logs = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        for run, values in ((TRAIN, train_logs), (VALIDATION, val_logs)):
            for key, value in values.items():
                number = _scalar(value)
                if number is not None:
                    runs[run][f"epoch_{key}"] = number
        for key, best in self.policy.best.items():
            if best.value is not None and best.epoch is not None:
                runs[run_of(key)][best_tag(key)] = best.value
        return runs

    def _scalar_summary(self, run: str, values: Mapping[str, float]) -> Any:
        """The scalars of one run; a best-so-far tag new in this file gets its description."""
        descriptions = {}
        for key, mode in self.policy.basis.items():
            tag = best_tag(key)
            if run_of(key) == run and tag in values and self._first_time(run, tag):
                descriptions[tag] = (
                    f"Best {key} so far ({mode}), at each epoch step. The epoch where "
                    f"each best was reached: Text tab, `{BEST_TEXT_TAG}`."
                )
        return summaries.scalars(values, descriptions)

    def _bests(self, number: int, improved: list[str]) -> tuple[str, list[str]]:
        """The ``basis/best`` table and the lines of the ``best/values`` picture of an
        epoch where keys improved (training thread)."""
        rows, lines = [], [f"Best so far, after epoch {number}:"]
        for key, best in self.policy.best.items():
            if best.value is None:
                continue
            mark = "**new**" if key in improved else ""
            mode = self.policy.basis[key]
            rows.append(f"| {key} | {mode} | {best.value:.6g} | {best.epoch} | {mark} |")
            new = " (new)" if key in improved else ""
            lines.append(f"{key} ({mode}): {best.value:.6g} at epoch {best.epoch}{new}")
        head = f"Bests after epoch {number}."
        if self._first_time(TRAIN, BEST_TEXT_TAG):  # said once per event file
            head = (
                f"Bests after epoch {number}. Epochs are 1-based, as Keras prints them; "
                "the TensorBoard step of epoch e is e - 1 when no resume shifted it."
            )
        table = "\n".join(
            [head, "", "| basis key | mode | best | epoch | |", "|---|---|---|---|---|", *rows]
        )
        return table, lines

    @staticmethod
    def _bests_description() -> str:
        return (
            "Each basis key's exact best so far and the 1-based epoch it was reached, "
            "written on each epoch where a key improved (charts are smoothed, this is "
            f"not). The same as a table: Text tab, `{BEST_TEXT_TAG}`."
        )

    def _weights(self) -> list[tuple[str, np.ndarray]]:
        """``[(tag, values)]`` of the weights, tagged as the installed Keras' callback tags
        them: by variable path from Keras 3.14, by variable name before (and tf_keras)."""
        by_path = _keras_version() >= (3, 14)
        out: list[tuple[str, np.ndarray]] = []
        for layer in self.model.layers:  # names may repeat across layers: so do Keras' tags
            for weight in layer.weights:
                name = getattr(weight, "path", None) if by_path else None
                tag = str(name or weight.name).replace(":", "_")
                out.append((f"{tag}/histogram", np.array(weight.numpy())))
        return out

    def _draw(
        self, number: int, step: int, logs: dict[str, Any], outputs: Any,
        improved: list[str], first: list[str], draw: int,
    ) -> tuple[Any, list[Any]]:
        """The grid and label table summaries of ``outputs`` (on the worker), and the artifact.

        The cells: the pool's mistakes first, then samples covering the classes
        (rotating with ``draw``, the picture's number); see :func:`images.pick`.
        """
        assert self._samples is not None
        _, display, y, labels = self._samples
        if isinstance(outputs, Mapping):
            outputs = next(iter(outputs.values()))
        elif isinstance(outputs, (list, tuple)):
            outputs = outputs[0]
        outputs = img.to_numpy(outputs)
        predicted = None
        if labels is not None and not img.is_segmentation(outputs, display.shape[1:3]):
            predicted = img.predicted_classes(outputs)
        chosen = np.array(img.pick(labels, min(self.max_images, len(display)), draw, predicted))
        display, outputs = display[chosen], outputs[chosen]
        y = None if y is None else img.to_numpy(y)[chosen]
        samples = img.describe(display, outputs, y, self.class_names)
        better = [k for k in improved if k not in first]
        why = ([f"improved: {', '.join(better)}"] if better else []) + (
            [f"first best of {', '.join(first)}"] if first else []
        )
        header = [f"epoch {number} (step {step})", *(why or ["first epoch of this fit"])]
        if samples.judged:
            header.append(f"{samples.correct}/{samples.judged} correct")
        picture = img.grid(samples.cells, samples.colors, samples.captions, header)
        facts = " - ".join(header)
        parts = [
            summaries.image(
                IMAGE_TAG, picture.array,
                description=self._image_description(samples)
                if self._first_time(VALIDATION, IMAGE_TAG) else None,
            ),
            summaries.text(LABELS_TAG, f"{facts}.\n\n{samples.table}"),
        ]
        height, width = picture.array.shape[:2]
        artifact = self.artifact(
            ARTIFACT_KIND,
            self.run_dirs[VALIDATION],
            number,
            logs,
            improved[0] if improved else None,
            tags=[IMAGE_TAG, LABELS_TAG],
            logdir=str(self.folder),  # what `tensorboard --logdir` shows (Teams cards)
            step=step,
            images=len(samples.cells),
            correct=samples.correct if samples.judged else None,
            improved=improved,
            segmentation=samples.segmentation,
            size=[int(height), int(width)],
            cells=[list(box) for box in picture.boxes],
        )
        return artifact, parts

    @staticmethod
    def _image_description(samples: img.Samples) -> str:
        """The static description of ``best/samples`` (TensorBoard shows a tag's first)."""
        if samples.segmentation:
            cell = (
                f"Each cell shows {samples.layout} (masks in a fixed palette, class 0 "
                "black); frame and strip green when the pixel accuracy is at least 0.5, "
                "red below, grey without true masks."
            )
        else:
            cell = (
                "Each cell: the input, framed green when the predicted class is the true "
                "one, red when not, grey without a label; under it `pred <class> "
                "(<score>)` and `true <class>`."
            )
        return (
            "Sample inputs with the model's predictions, drawn on the first epoch of each "
            "fit and on due epochs where a basis key improved: the samples the model gets "
            "wrong first, then samples that cover the classes (rotating when there are "
            "more classes than cells). The top line of each step's picture: the epoch "
            f"(1-based, as Keras prints it), why it was drawn, how many are right. {cell} "
            f"The same as a table: Text tab, `{LABELS_TAG}`."
        )

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
            "folder": str(self.store),
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

    def _graph(self) -> str | None:
        """The model's JSON for the Graphs tab, for the models Keras writes it for."""
        if type(self.model).__name__ not in GRAPH_MODELS:
            return None
        try:
            return str(self.model.to_json())
        except Exception as exc:  # as Keras: a model that does not serialize has no graph
            warnings.warn(
                f"{type(self).__name__}: the model does not serialize to JSON, so no graph "
                f"is written: {type(exc).__name__}: {exc}",
                UserWarning,
                stacklevel=3,
            )
            return None

    def _write_texts(self, texts: Mapping[str, str], graph: str | None) -> None:
        parts = [summaries.text(tag, text) for tag, text in texts.items()]
        if graph is not None:
            parts.append(summaries.keras_graph(graph, GRAPH_TAG))
        self._write(TRAIN, 0, *parts)
        self._flush()
        self._ship()
