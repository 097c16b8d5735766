"""``TFLiteCallback``: a verified ``.tflite`` file of the best model, without holding training."""

from __future__ import annotations

import math
import numbers
import os
import shutil
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvml_core.artifact import file_stem
from cvml_core.basis import KeyBest, is_integer
from cvml_core.callback import BasisCallback
from cvml_tflite import QUANTIZATION_MODES
from cvml_tflite.convert import SNAPSHOT_CONFIG, SNAPSHOT_WEIGHTS
from cvml_tflite.process import WorkerCrashedError, run_conversion

#: Default ``max_error`` per quantization mode (outputs of the order of probabilities).
DEFAULT_MAX_ERROR: dict[str | None, float] = {
    None: 1e-4,
    "float16": 1e-2,
    "dynamic": 5e-2,
    "int8": 1e-1,
}
_KERAS_PACKAGES = ("keras", "tf_keras", "tensorflow")


class TFLiteConversionError(RuntimeError):
    """A conversion failed; the message carries the converter's own error."""


class TFLiteWarning(UserWarning):
    """A conversion failed (``strict=False``) or a file failed its verification."""


@dataclass
class _Snapshot:
    """The model as it was at the end of ``epoch``: its config and a copy of its weights."""

    epoch: int
    config: str
    weights: list[np.ndarray] | None
    imports: list[str]
    main_classes: list[str]
    taken_at: float
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
        return self.folder

    def discard(self) -> None:
        self.weights = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class _Entry:
    """A file to write from a snapshot: for a basis key (or None for ``final``)."""

    key: str | None
    path: Path
    logs: dict[str, Any] = field(default_factory=dict)


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


def _all_layers(model: Any) -> list[Any]:
    """The model and its nested layers: Keras' private walk if present, else our own."""
    flatten = getattr(model, "_flatten_layers", None)
    if callable(flatten):
        try:
            return list(flatten())
        except Exception:  # a private API that changed: fall back to the public one
            pass
    return _walk_layers(model)


def _best_of(state: Mapping[str, Any], key: str) -> KeyBest:
    entry = state.get("best", {}).get(key) or {}
    return KeyBest(entry.get("value"), entry.get("epoch"))


class TFLiteCallback(BasisCallback):
    """Converts the model to ``.tflite`` when a basis key improves, and verifies the file.

    On a due epoch where keys improved, the model is snapshotted on the training
    thread (its config and weights, a fast save) and converted in a worker process
    while training goes on. One conversion runs at a time; a newer improvement
    replaces a conversion still waiting, and that conversion then writes the files of
    every key that improved since the last one started, so no best is lost.

    Files, in ``log_dir/tflite/``: ``best_<key>.tflite`` per basis key (characters
    other than letters, digits, ``_ . -`` become ``_``) and, with ``at_train_end``,
    ``final.tflite``. Each is verified with the LiteRT interpreter on a sample batch
    against the Keras model in inference mode; figures go to ``manifest.json``.

    :param at_train_end: also convert the final model to ``final.tflite``.
    :param quantization: None (float32), ``"float16"``, ``"dynamic"`` (dynamic-range)
        or ``"int8"`` (full integer, int8 inputs/outputs, calibrated on ``sample_data``).
    :param sample_data: input samples (an array, first axis = samples, any numeric
        dtype: cast to the model's input dtype) for verification and int8 calibration.
        ``TrainInfer`` hands over dev samples when none are given; without any, float
        files are verified on random inputs.
    :param strict: raise a conversion or snapshot failure on the training thread
        (stopping training) instead of warning. Either way, a key whose file was not
        written keeps the best of its file on disk (the failed best is rolled back).
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
    wants_sample_data = True

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        basis_dict: Mapping[str, str],
        skip_from_start: int = 0,
        frequency: int = 1,
        min_delta: float = 0.0,
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
        folder: str | None = None,
    ) -> None:
        if quantization not in QUANTIZATION_MODES:
            raise ValueError(
                f"quantization must be one of {list(QUANTIZATION_MODES)} (None = float32). "
                f"Received: quantization={quantization!r}"
            )
        for arg, value in (("at_train_end", at_train_end), ("strict", strict)):
            if not isinstance(value, bool):
                raise ValueError(f"{arg} must be True or False. Received: {arg}={value!r}")
        if max_error is not None and (
            isinstance(max_error, bool)
            or not isinstance(max_error, numbers.Real)
            or not math.isfinite(max_error)
            or max_error < 0
        ):
            raise ValueError(
                f"max_error must be None or a finite number >= 0. Received: max_error={max_error!r}"
            )
        if (
            isinstance(min_top1_agreement, bool)
            or not isinstance(min_top1_agreement, numbers.Real)
            or not 0.0 <= min_top1_agreement <= 1.0
        ):
            raise ValueError(
                "min_top1_agreement must be a number in [0, 1]. "
                f"Received: min_top1_agreement={min_top1_agreement!r}"
            )
        for arg, value in (
            ("verify_samples", verify_samples),
            ("calibration_samples", calibration_samples),
            ("worker_max_conversions", worker_max_conversions),
        ):
            if not is_integer(value) or value < 1:
                raise ValueError(f"{arg} must be an integer >= 1. Received: {arg}={value!r}")
        if worker_max_rss_mb is not None and (
            isinstance(worker_max_rss_mb, bool)
            or not isinstance(worker_max_rss_mb, numbers.Real)
            or not worker_max_rss_mb > 0
        ):
            raise ValueError(
                "worker_max_rss_mb must be None or a number > 0. "
                f"Received: worker_max_rss_mb={worker_max_rss_mb!r}"
            )
        if quantization == "int8" and sample_data is None:
            raise ValueError(
                "quantization='int8' needs sample_data: a representative batch of inputs "
                "(e.g. 100 dev samples) to calibrate on. Received: sample_data=None"
            )
        sample = self._check_sample(sample_data) if sample_data is not None else None
        super().__init__(log_dir, basis_dict, skip_from_start, frequency, min_delta, folder)
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
        # Per key: the snapshot to convert next, its logs and the basis state taken with it.
        self._pending: dict[str, tuple[_Snapshot, dict[str, Any], dict[str, Any]]] = {}
        self._pending_lock = threading.Lock()  # guards _pending, _queued, _written, _failed
        # Per key: the best whose file is on disk (what the manifest may claim) ...
        self._written: dict[str, KeyBest] = {
            key: KeyBest(best.value, best.epoch) for key, best in self.policy.best.items()
        }
        # ... the best of the newest snapshot handed to a conversion not finished yet ...
        self._queued: dict[str, KeyBest] = {}
        # ... and (key, best) of failed conversions, to roll back on the training thread.
        self._failed: list[tuple[str, KeyBest]] = []
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
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="cvml-tflite-"))
            # Removed at train end; also if training dies before on_train_end.
            weakref.finalize(self, shutil.rmtree, self._scratch, True)
        return self._scratch

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

    def _snapshot(self, epoch: int) -> _Snapshot:
        """Copy what the worker needs to rebuild the model as it is now (fast: no disk)."""
        start = time.perf_counter()
        layers = _all_layers(self.model)
        modules = {type(layer).__module__ for layer in layers}
        snapshot = _Snapshot(
            epoch=epoch,
            config=self.model.to_json(),
            weights=self.model.get_weights(),
            imports=sorted(
                m for m in modules if m.split(".")[0] not in _KERAS_PACKAGES and m != "__main__"
            ),
            main_classes=sorted(
                type(layer).__name__ for layer in layers if type(layer).__module__ == "__main__"
            ),
            taken_at=time.time(),
        )
        self.snapshot_seconds.append(time.perf_counter() - start)
        return snapshot

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._last_epoch = epoch + 1
        super().on_epoch_end(epoch, logs)

    def on_improved(self, epoch: int, improved_keys: list[str], logs: dict[str, Any]) -> None:
        try:
            snapshot = self._snapshot(epoch)
        except Exception as exc:
            self._snapshot_failed(epoch, improved_keys, exc)
            return
        self._scratch_dir()
        state = self.policy.state_dict()
        with self._pending_lock:
            replaced = [self._pending[k][0] for k in improved_keys if k in self._pending]
            for key in improved_keys:
                self._pending[key] = (snapshot, dict(logs), state)
                self._queued[key] = _best_of(state, key)
            still_used = {id(entry[0]) for entry in self._pending.values()}
        for old in replaced:
            if id(old) not in still_used:
                old.discard()
        self.run_in_background(f"tflite epoch {epoch}", self._convert_pending, supersede=True)

    def _snapshot_failed(self, epoch: int, keys: list[str], exc: Exception) -> None:
        """No snapshot, no file: the epoch's keys keep the best that has (or gets) one."""
        with self._pending_lock:
            for key in keys:
                if key in self.policy.best:
                    self._roll_back(key, self.policy.best[key])
        message = (
            f"tflite: cannot snapshot the model of epoch {epoch} (for {', '.join(keys)}), "
            f"no file is written: {type(exc).__name__}: {exc}"
        )
        if isinstance(exc, NotImplementedError) or "get_config" in str(exc):
            message += (
                "\nThe worker rebuilds the model from model.to_json(): a subclassed model "
                "needs get_config/from_config."
            )
        if self.strict:
            raise TFLiteConversionError(message) from exc
        warnings.warn(message, TFLiteWarning, stacklevel=3)

    def _roll_back(self, key: str, failed: KeyBest) -> None:
        """If ``key``'s best is still ``failed`` (no file for it), restore the best of the
        conversion still to come or, if none, of the file on disk. Hold ``_pending_lock``."""
        if self.policy.best[key] != failed:
            return  # a newer epoch improved since: its own conversion decides
        target = self._queued.get(key) or self._written[key]
        self.policy.best[key] = KeyBest(target.value, target.epoch)

    def _roll_back_failures(self) -> None:
        with self._pending_lock:
            failed, self._failed = self._failed, []
            for key, best in failed:
                self._roll_back(key, best)

    def _written_state(self) -> dict[str, Any]:
        """The basis state with, per key, the best whose file is written. Hold ``_pending_lock``."""
        state = self.policy.state_dict()
        state["best"] = {
            key: {"value": best.value, "epoch": best.epoch} for key, best in self._written.items()
        }
        return state

    def on_finished(self, logs: dict[str, Any]) -> None:
        if not self.at_train_end or self.model is None:
            return
        try:
            snapshot = self._snapshot(self._last_epoch)
        except Exception as exc:
            self._snapshot_failed(self._last_epoch, ["final"], exc)
            return
        self._scratch_dir()
        entry = _Entry(None, self.folder / "final.tflite", dict(logs))
        self.run_in_background("tflite final", lambda _: self._convert(snapshot, [entry], {}))

    def announce(self) -> None:
        """Raise a background failure, announce new files, warn about failed conversions;
        roll back the bests of failed conversions (their files were not written)."""
        try:
            super().announce()
            messages = self.worker.drain()
        finally:
            self._roll_back_failures()
        for message in messages:
            warnings.warn(message, TFLiteWarning, stacklevel=2)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        try:
            super().on_train_end(logs)
        finally:
            if self._scratch is not None and not self.worker.busy:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None
                self._sample_file = None

    # -- background worker thread ----------------------------------------------

    def _convert_pending(self, _queued_state: dict[str, Any]) -> str | None:
        # The state captured at submit may be older than the snapshots taken now: each
        # key's best comes from the state stored with the snapshot converted for it.
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        groups: dict[int, tuple[_Snapshot, list[_Entry]]] = {}
        bests: dict[str, KeyBest] = {}
        for key, (snapshot, logs, state) in pending.items():
            entry = _Entry(key, self.folder / f"best_{file_stem(key)}.tflite", logs)
            groups.setdefault(id(snapshot), (snapshot, []))[1].append(entry)
            bests[key] = _best_of(state, key)
        messages = []
        error: TFLiteConversionError | None = None
        for snapshot, entries in sorted(groups.values(), key=lambda g: g[0].epoch):
            try:
                message = self._convert(snapshot, entries, bests)
            except TFLiteConversionError as exc:  # strict: convert the other keys first
                error = error or exc
                continue
            if message:
                messages.append(message)
        if error is not None:
            raise error
        return "\n".join(messages) or None

    def _convert(
        self, snapshot: _Snapshot, entries: Sequence[_Entry], bests: Mapping[str, KeyBest]
    ) -> str | None:
        """Convert one snapshot to every entry's file; return a warning, if any.

        ``bests`` holds, per basis key of ``entries``, the best reached by ``snapshot``.
        """
        stage = "writing the snapshot"
        try:
            payload = {
                "snapshot": str(snapshot.write(self._scratch_dir())),
                "imports": snapshot.imports,
                "quantization": self.quantization,
                "sample": self._sample_path(),
                "verify_samples": self.verify_samples,
                "outputs": [str(entry.path) for entry in entries],
            }
            stage = "worker"
            answer = run_conversion(payload, self.worker_max_conversions, self.worker_max_rss_mb)
        except (WorkerCrashedError, OSError) as exc:  # e.g. a full disk: no file either
            answer = {"ok": False, "stage": stage, "error_type": type(exc).__name__,
                      "message": str(exc)}
        finally:
            snapshot.discard()
        keys = [entry.key or "final" for entry in entries]
        self.conversions.append(
            {"epoch": snapshot.epoch, "keys": keys, "snapshot_at": snapshot.taken_at,
             **{k: answer.get(k) for k in ("ok", "started_at", "finished_at", "worker_pid")},
             "worker_rss_mb": answer.get("rss_mb")}
        )
        basis_keys = [entry.key for entry in entries if entry.key is not None]
        with self._pending_lock:
            for key in basis_keys:
                if self._queued.get(key) == bests[key]:
                    del self._queued[key]  # nothing newer is on its way for this key
                if answer["ok"]:
                    self._written[key] = bests[key]
                else:
                    self._failed.append((key, bests[key]))
            state = self._written_state()
        if not answer["ok"]:
            return self._failure(snapshot, keys, answer)
        return self._record(snapshot, entries, answer, state)

    def _failure(self, snapshot: _Snapshot, keys: list[str], answer: dict[str, Any]) -> str:
        message = (
            f"tflite conversion of epoch {snapshot.epoch} (for {', '.join(keys)}) failed "
            f"while {answer.get('stage')}: {answer.get('error_type')}: {answer.get('message')}"
        )
        if answer.get("stage") == "load" and snapshot.main_classes:
            message += (
                f"\nThe worker process cannot import layers defined in __main__ "
                f"({', '.join(snapshot.main_classes)}): define them in an importable module."
            )
        if self.strict:
            raise TFLiteConversionError(message)
        return message

    def _record(
        self,
        snapshot: _Snapshot,
        entries: Sequence[_Entry],
        answer: dict[str, Any],
        state: dict[str, Any],
    ) -> str | None:
        error = answer.get("max_abs_error")
        top1 = answer.get("top1_agreement")
        verify_error = answer.get("verify_error")
        verified = (
            verify_error is None
            and error is not None
            and error <= self.max_error
            and (top1 is None or top1 >= self.min_top1_agreement)
        )
        details = {
            "quantization": self.quantization or "float32",
            "size": answer.get("size"),
            "max_abs_error": error,
            "top1_agreement": top1,
            "verified": verified,
            "verify_error": verify_error,
            "verify_samples": answer.get("samples"),
            "sample_source": answer.get("sample_source"),
            "max_error": self.max_error,
            "min_top1_agreement": self.min_top1_agreement,
            "conversion_started_at": answer.get("started_at"),
            "conversion_finished_at": answer.get("finished_at"),
        }
        artifacts = [
            self.artifact("tflite", entry.path, snapshot.epoch, entry.logs, entry.key, **details)
            for entry in entries
        ]
        self.record(artifacts, state)
        if verified:
            return None
        names = ", ".join(entry.path.name for entry in entries)
        if verify_error:
            return f"{names} (epoch {snapshot.epoch}) was written but not verified: {verify_error}"
        return (
            f"{names} (epoch {snapshot.epoch}, {details['quantization']}) is kept but failed "
            f"verification: max_abs_error={error:.3g} (allowed {self.max_error:.3g}), "
            f"top1_agreement={top1} (allowed >= {self.min_top1_agreement:.3g})"
        )
