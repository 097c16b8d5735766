"""``TFLiteCallback``: a verified ``.tflite`` file of the best model, without holding training."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvml_core.artifacts.artifact import Staged, file_stem
from cvml_core.artifacts.atomic import scratch_dir, temp_path_for
from cvml_core.artifacts.callback import BasisCallback, SaveJob
from cvml_core.keras_compat import keras
from cvml_core.policy.checks import check_bool, check_int, check_number
from cvml_tflite import QUANTIZATION_MODES
from cvml_tflite.convert import SNAPSHOT_CONFIG, SNAPSHOT_REFERENCE, SNAPSHOT_WEIGHTS
from cvml_tflite.process import WorkerCrashedError, run_conversion
from cvml_tflite.verify import flatten

#: Default ``max_error`` per quantization mode (outputs of the order of probabilities).
DEFAULT_MAX_ERROR: dict[str | None, float] = {
    None: 1e-4,
    "float16": 1e-2,
    "dynamic": 5e-2,
    "int8": 1e-1,
}
_KERAS_PACKAGES = ("keras", "tf_keras", "tensorflow")
FINAL = "final"  # the extra file written at train end


class TFLiteConversionError(RuntimeError):
    """A snapshot or conversion failed; the message carries the underlying error
    (for a conversion, the converter's own message)."""


class TFLiteWarning(UserWarning):
    """A conversion failed (``strict=False``) or a file failed its verification."""


def _figures(details: dict[str, Any]) -> str:
    """A conversion's verification figures in one line."""
    parts = []
    if details.get("quantization"):
        parts.append(str(details["quantization"]))
    if details.get("size") is not None:
        parts.append(f"{details['size'] / 1024:.1f} KiB")
    if details.get("max_abs_error") is not None:
        parts.append(f"max abs error {details['max_abs_error']:.2g}")
    if details.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {100 * details['top1_agreement']:.1f}%")
    if details.get("verify_samples") is not None:
        parts.append(f"on {details['verify_samples']} samples")
    if "verified" in details:
        parts.append("verified" if details["verified"] else "NOT verified")
    return ", ".join(parts) or str(details)


@dataclass
class _Snapshot:
    """The model as it was at the end of ``epoch``: its config and a copy of its weights."""

    epoch: int
    config: str
    weights: list[np.ndarray] | None
    imports: list[str]
    main_classes: list[str]
    taken_at: float
    #: Off the TensorFlow backend: a batch and the live model's outputs on it, which
    #: the file is verified against (the worker rebuilds the model on TensorFlow).
    reference: dict[str, np.ndarray] | None = None
    folder: Path | None = None

    def write(self, parent: Path) -> Path:
        """Write the files the worker reads (on the background thread); free the copy."""
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix=f"epoch{self.epoch}-", dir=parent))
            (self.folder / SNAPSHOT_CONFIG).write_text(self.config, encoding="utf-8")
            assert self.weights is not None
            np.savez(self.folder / SNAPSHOT_WEIGHTS,
                     **{f"w{i}": w for i, w in enumerate(self.weights)})
            self.weights = None
            if self.reference is not None:
                np.savez(self.folder / SNAPSHOT_REFERENCE, **self.reference)
                self.reference = None
        return self.folder

    def reference_path(self) -> str | None:
        """The written reference batch, if any (after :meth:`write`)."""
        path = None if self.folder is None else self.folder / SNAPSHOT_REFERENCE
        return str(path) if path is not None and path.exists() else None

    def discard(self) -> None:
        self.weights = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _walk_layers(layer: Any) -> list[Any]:
    """``layer`` and every layer nested in it, depth first, each once (public API only)."""
    found: list[Any] = []
    seen: set[int] = set()
    stack = [layer]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        stack.extend(reversed(list(getattr(current, "layers", None) or [])))
    return found


class TFLiteCallback(BasisCallback):
    """Converts the model to ``.tflite`` when a basis key improves, and verifies the file.

    On a due epoch where keys improved, the model is snapshotted on the training
    thread (its config and weights, a fast save) and converted in a worker process
    while training goes on; one conversion writes the file of every key that improved
    at that epoch. One conversion runs at a time; a newer improvement of a key
    replaces that key's conversion still waiting (``supersede``), so each key gets
    the file of its newest best and none holds a newer model than its epoch.

    Files, in ``log_dir/tflite/``: ``best_<key>.tflite`` per basis key (characters
    other than letters, digits, ``_ . -`` become ``_``) and, with ``at_train_end``,
    ``final.tflite``. Each is verified with the LiteRT interpreter on a sample batch
    against the Keras model in inference mode; figures go to ``manifest.json``.

    :param at_train_end: also convert the final model to ``final.tflite``.
    :param schedule: ``skip_from_start``, ``frequency``, ``min_delta`` and ``folder``,
        as for :class:`~cvml_core.artifacts.callback.BasisCallback`.
    :param quantization: None (float32), ``"float16"``, ``"dynamic"`` (dynamic-range)
        or ``"int8"`` (full integer, int8 inputs/outputs, calibrated on ``sample_data``).
    :param sample_data: input samples (an array, first axis = samples, any numeric
        dtype: cast to the model's input dtype) for verification and int8 calibration.
        ``TrainInfer`` hands over dev samples when none are given; without any, float
        files are verified on random inputs.
    :param strict: raise instead of warning (:class:`TFLiteWarning`), stopping
        training: a failed snapshot raises :class:`TFLiteConversionError` at once, a
        failed conversion raises ``cvml_core.BackgroundJobError`` (caused by a
        :class:`TFLiteConversionError`) on the training thread once the conversions
        waiting with it have run. Either way, a key whose file was not written keeps
        the best of its file on disk, or still being converted (the failed best is
        rolled back).
    :param max_error: the largest max-abs-error between file and Keras outputs for a
        file to count as verified; default per mode (:data:`DEFAULT_MAX_ERROR`).
    :param min_top1_agreement: the smallest top-1 agreement (classifier outputs).
    :param verify_samples: samples run through both models.
    :param calibration_samples: samples used to calibrate ``int8``.
    :param worker_max_conversions: conversions before the worker process is replaced.
    :param worker_max_rss_mb: resident memory (MiB) above which it is replaced.

    Example::

        TFLiteCallback(log_dir, {"val_loss": "min"}, skip_from_start=4, frequency=5,
                       quantization="int8", sample_data=x_dev[:100])
    """

    name = "tflite"
    save_label = "conversion"
    warning_category = TFLiteWarning
    wants_sample_data = True
    supersede = True

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        basis_dict: Mapping[str, str],
        *,
        at_train_end: bool = False,
        quantization: str | None = None,
        sample_data: Any = None,
        strict: bool = False,
        max_error: float | None = None,
        min_top1_agreement: float = 0.9,
        verify_samples: int = 32,
        calibration_samples: int = 100,
        worker_max_conversions: int = 20,
        worker_max_rss_mb: float | None = 4096.0,
        **schedule: Any,
    ) -> None:
        if quantization not in QUANTIZATION_MODES:
            raise ValueError(
                f"quantization must be one of {list(QUANTIZATION_MODES)} (None = float32). "
                f"Received: quantization={quantization!r}"
            )
        at_train_end = check_bool("at_train_end", at_train_end)
        strict = check_bool("strict", strict)
        max_error = check_number("max_error", max_error, low=0.0, none_ok=True)
        min_top1_agreement = check_number("min_top1_agreement", min_top1_agreement, 0.0, 1.0)
        verify_samples = check_int("verify_samples", verify_samples, 1)
        calibration_samples = check_int("calibration_samples", calibration_samples, 1)
        worker_max_conversions = check_int("worker_max_conversions", worker_max_conversions, 1)
        worker_max_rss_mb = check_number(
            "worker_max_rss_mb", worker_max_rss_mb, low=0.0, low_open=True, none_ok=True
        )
        if quantization == "int8" and sample_data is None:
            raise ValueError(
                "quantization='int8' needs sample_data: a representative batch of inputs "
                "(e.g. 100 dev samples) to calibrate on. Received: sample_data=None"
            )
        sample = self._check_sample(sample_data) if sample_data is not None else None
        super().__init__(log_dir, basis_dict, **schedule)
        self.at_train_end = at_train_end
        self.quantization = quantization
        self.strict = strict
        self.max_error = DEFAULT_MAX_ERROR[quantization] if max_error is None else float(max_error)
        self.min_top1_agreement = float(min_top1_agreement)
        self.verify_samples = int(verify_samples)
        self.calibration_samples = int(calibration_samples)
        self.worker_max_conversions = int(worker_max_conversions)
        self.worker_max_rss_mb = worker_max_rss_mb
        if sample is not None:
            self.sample_data = (sample, None)
        #: One dict per finished conversion attempt (epoch, keys, ok, timestamps ...).
        self.conversions: list[dict[str, Any]] = []
        #: Seconds the training thread spent taking each snapshot.
        self.snapshot_seconds: list[float] = []
        self._scratch: Path | None = None
        self._sample_file: Path | None = None
        self._last_epoch = 0

    @staticmethod
    def _check_sample(x: Any) -> np.ndarray:
        try:
            array = np.asarray(x)
        except Exception as exc:
            raise ValueError(
                f"sample_data must be an array of input samples. Received: {type(x).__name__}"
            ) from exc
        if array.ndim < 1 or len(array) == 0 or array.dtype == object:
            raise ValueError(
                "sample_data must be a non-empty numeric array (first axis = samples). "
                f"Received: sample_data with shape {array.shape} and dtype {array.dtype}"
            )
        return array

    @classmethod
    def demo_options(cls, demo: Any) -> dict[str, Any]:
        # The second half only: each conversion costs a few seconds of CPU.
        return {"skip_from_start": demo.epochs // 2}

    def demo_report(self, log_dir: Path) -> list[str]:
        standing = self.current_artifacts()  # the last entry of each file
        if not standing:
            return []
        lines = ["TFLite verification (LiteRT vs Keras on dev samples):"]
        for entry in standing:
            lines.append(f"  {Path(entry['path']).name}: {_figures(entry.get('details', {}))}")
        return lines

    def set_sample_data(self, x: Any, y: Any = None) -> None:
        """Take handed-over samples unless the user gave some; ignore (with a warning)
        inputs that are not one numeric array, e.g. of a multi-input model."""
        if self.sample_data is not None:
            return
        try:
            self.sample_data = (self._check_sample(x), y)
        except ValueError as exc:
            warnings.warn(f"tflite: sample data ignored, files are verified on random "
                          f"inputs: {exc}", TFLiteWarning, stacklevel=2)

    # -- training thread -------------------------------------------------------

    def _scratch_dir(self) -> Path:
        """Where snapshots go: ``log_dir/tflite/.tmp-scratch-*`` on the chief, so that
        after a kill the next run's start removes it with the other stale temps (a
        process that is not the chief never writes in ``log_dir``: the system's temp
        folder)."""
        if self._scratch is None:
            if self.chief:
                self._scratch = scratch_dir(self.folder, "scratch")
            else:
                self._scratch = Path(tempfile.mkdtemp(prefix=f"cvml-tflite-{os.getpid()}-"))
            # Removed at train end; also if training dies before on_train_end.
            weakref.finalize(self, shutil.rmtree, self._scratch, True)
        return self._scratch

    def snapshot(self, epoch: int, logs: dict[str, Any]) -> _Snapshot:
        """Copy what the worker needs to rebuild the model as it is now (fast: no disk)."""
        start = time.perf_counter()
        try:
            layers = _walk_layers(self.model)
            config = self.model.to_json()
            weights = self.model.get_weights()
            reference = None if keras.backend.backend() == "tensorflow" else self._reference()
        except Exception as exc:
            message = (
                f"cannot snapshot the model of epoch {epoch}: {type(exc).__name__}: {exc}"
            )
            if isinstance(exc, NotImplementedError) or "get_config" in str(exc):
                message += (
                    "\nThe worker rebuilds the model from model.to_json(): a subclassed "
                    "model needs get_config/from_config."
                )
            raise TFLiteConversionError(message) from exc
        modules = {type(layer).__module__ for layer in layers}
        snapshot = _Snapshot(
            epoch=epoch,
            config=config,
            weights=weights,
            imports=sorted(
                m for m in modules if m.split(".")[0] not in _KERAS_PACKAGES and m != "__main__"
            ),
            main_classes=sorted(
                type(layer).__name__ for layer in layers if type(layer).__module__ == "__main__"
            ),
            taken_at=time.time(),
            reference=reference,
        )
        self._scratch_dir()
        self.snapshot_seconds.append(time.perf_counter() - start)
        return snapshot

    def release(self, snapshot: _Snapshot) -> None:
        snapshot.discard()

    def _reference(self) -> dict[str, np.ndarray]:
        """A batch (the sample data, else seeded random inputs) and the live model's
        outputs on it, in inference mode."""
        if self.sample_data is not None:
            x, source = np.asarray(self.sample_data[0])[: self.verify_samples], "data"
        else:
            shape = tuple(self.model.inputs[0].shape)[1:]
            rng = np.random.default_rng(0)
            x, source = rng.standard_normal((8, *shape)).astype("float32"), "random"
        dtype = keras.backend.standardize_dtype(self.model.inputs[0].dtype)
        x = x.astype(dtype)
        outputs = flatten(self.model.predict_on_batch(x))
        return {
            "x": x,
            "source": np.array(source),
            **{f"y{i}": keras.ops.convert_to_numpy(y) for i, y in enumerate(outputs)},
        }

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._last_epoch = epoch + 1
        super().on_epoch_end(epoch, logs)

    def on_finished(self, logs: dict[str, Any]) -> None:
        if self.at_train_end and self.model is not None:
            self.save(self._last_epoch, logs, extras=[FINAL])

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        try:
            super().on_train_end(logs)
        finally:
            if self._scratch is not None and not self.worker.busy:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None
                self._sample_file = None

    # -- background worker thread ----------------------------------------------

    def _sample_path(self) -> str | None:
        if self.sample_data is None:
            return None
        if self._sample_file is None:
            count = self.verify_samples
            if self.quantization == "int8":
                count = max(count, self.calibration_samples)
            x = np.asarray(self.sample_data[0])[:count]
            path = self._scratch_dir() / "sample.npy"
            # Saved as given (float64 as float32); the worker casts to the input dtype.
            np.save(path, x.astype(np.float32) if x.dtype == np.float64 else x)
            self._sample_file = path
        return str(self._sample_file)

    def write(self, job: SaveJob) -> Iterator[list[Staged]]:
        """Convert ``job.snapshot`` once, to the file of each of its keys and extras.

        The worker process writes each file to a temporary name in the folder and
        verifies it; this (parent) process then hands them to the core, which renames
        them into place and records them, manifest first. A worker whose parent died
        never renames anything into ``log_dir``, and it dies with its parent."""
        snapshot: _Snapshot = job.snapshot
        targets: list[tuple[str | None, Path]] = [
            (key, self.folder / f"best_{file_stem(key)}.tflite") for key in job.keys
        ]
        targets += [(None, self.folder / f"{extra}.tflite") for extra in job.extras]
        temps = [temp_path_for(path) for _, path in targets]
        names = ", ".join(path.name for _, path in targets)
        try:
            answer = self._convert(job, snapshot, temps)
        except BaseException:
            self._remove(temps)
            raise
        if not answer["ok"] or not all(t.exists() for t in temps):
            self._remove(temps)
        stage = {"write": "writing"}.get(answer.get("stage") or "", answer.get("stage"))
        self.conversions.append(
            {"epoch": job.epoch, "keys": job.keys + job.extras, "snapshot_at": snapshot.taken_at,
             **{k: answer.get(k) for k in ("ok", "started_at", "finished_at", "worker_pid")},
             "worker_rss_mb": answer.get("rss_mb")}
        )
        if not answer["ok"]:
            where = f" ({names} in {self.store})"
            message = (f"{answer.get('error_type')} while {stage}{where}: "
                       f"{answer.get('message')}")
            if answer.get("stage") == "load" and snapshot.main_classes:
                message += (
                    f"\nThe worker process cannot import layers defined in __main__ "
                    f"({', '.join(snapshot.main_classes)}): define them in an importable module."
                )
            raise TFLiteConversionError(message)
        details = self._details(answer)
        yield [
            Staged(temp, self.artifact("tflite", path, job.epoch, job.logs, key, **details))
            for temp, (key, path) in zip(temps, targets, strict=True)
        ]
        if not details["verified"]:
            self.warn_later(self._unverified(names, job.epoch, details))

    @staticmethod
    def _remove(paths: list[Path]) -> None:
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink()

    def _convert(self, job: SaveJob, snapshot: _Snapshot, temps: list[Path]) -> dict[str, Any]:
        """Run the conversion into ``temps``; a failure is an ``ok: False`` answer."""
        stage = "writing the snapshot"
        try:
            folder = snapshot.write(self._scratch_dir())
            payload = {
                "snapshot": str(folder),
                "tmpdir": str(folder / "tmp"),  # the worker's temp directory for this job
                "imports": snapshot.imports,
                "quantization": self.quantization,
                "sample": self._sample_path(),
                "reference": snapshot.reference_path(),
                "verify_samples": self.verify_samples,
                "outputs": [str(path) for path in temps],
            }
            stage = "running the worker"
            # A worker started now gets the scratch folder as its TMPDIR.
            return run_conversion(payload, self.worker_max_conversions, self.worker_max_rss_mb,
                                  env={"TMPDIR": str(self._scratch_dir())})
        except (WorkerCrashedError, OSError) as exc:  # e.g. a full disk: no file either
            return {"ok": False, "stage": stage, "error_type": type(exc).__name__,
                    "message": str(exc)}

    def _details(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The manifest details of a converted file: its verification figures."""
        error = answer.get("max_abs_error")
        top1 = answer.get("top1_agreement")
        verify_error = answer.get("verify_error")
        return {
            "quantization": self.quantization or "float32",
            "size": answer.get("size"),
            "max_abs_error": error,
            "top1_agreement": top1,
            "verified": (
                verify_error is None
                and error is not None
                and error <= self.max_error
                and (top1 is None or top1 >= self.min_top1_agreement)
            ),
            "verify_error": verify_error,
            "verify_samples": answer.get("samples"),
            "sample_source": answer.get("sample_source"),
            "max_error": self.max_error,
            "min_top1_agreement": self.min_top1_agreement,
            "conversion_started_at": answer.get("started_at"),
            "conversion_finished_at": answer.get("finished_at"),
        }

    def _unverified(self, names: str, epoch: int, details: dict[str, Any]) -> str:
        if details["verify_error"]:
            return f"{names} (epoch {epoch}) was written but not verified: " + details[
                "verify_error"]
        return (
            f"{names} (epoch {epoch}, {details['quantization']}) is kept but failed "
            f"verification: max_abs_error={details['max_abs_error']:.3g} (allowed "
            f"{self.max_error:.3g}), top1_agreement={details['top1_agreement']} "
            f"(allowed >= {self.min_top1_agreement:.3g})"
        )
