"""The ``ckpt`` callback: the best checkpoint per basis key, atomic, resumable, backgrounded."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cvml_ckpt import files
from cvml_ckpt.snapshot import ModelSnapshot, Snapshotter, snapshot_supported
from cvml_ckpt.writer import check_file, read_tags, write_snapshot
from cvml_core.artifact import Manifest
from cvml_core.atomic import atomic_path
from cvml_core.callback import BasisCallback
from cvml_core.keras_compat import uses_legacy_keras


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}")
    return value


class _UnreadableFile(RuntimeError):
    """The first file of a run, written from a snapshot, fails :func:`check_file`."""


def _link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` hold ``source``'s bytes: a hard link, or a copy where links fail."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class CkptCallback(BasisCallback):
    """Saves a checkpoint when a basis key improves, without holding training.

    On each due epoch (see the basis policy) where basis keys improve, the model is
    copied on the training thread (weights and optimizer state as numpy arrays) and
    written by a background thread, atomically, to ``log_dir/ckpt/best_<key>.keras``
    for each improved key; the files of one epoch are hard links to one write.
    ``manifest.json`` beside them records every file and the basis state, so a new
    callback on the same ``log_dir`` keeps the bests of the previous run.

    :param log_dir: the run's folder; files go to ``log_dir/ckpt/``.
    :param basis_dict: ``{metric: "min"|"max"}``, e.g. ``{"val_loss": "min"}``.
    :param skip_from_start: the first epochs that are never due.
    :param frequency: an epoch ``e`` (1-based) is due when ``e % frequency == 0``.
    :param min_delta: how much a value must beat its best to count as improved.
    :param save_last: also write ``last.keras`` on every due epoch.
    :param keep_top_k: how many bests to keep per key: the current best
        (``best_<key>``) and the ``keep_top_k - 1`` previous ones
        (``best_<key>.epoch<NNNN>``). ``None`` keeps them all. Default 1.
    :param save_weights_only: write ``.weights.h5`` (``model.save_weights``'s format)
        instead of a full ``.keras`` model.
    :param include_optimizer: include the optimizer state, so training resumes exactly.
    :param background: write on the background thread (default); False writes the same
        file on the training thread.

    Example::

        cb = CkptCallback("runs/exp1", {"val_loss": "min"}, skip_from_start=4)
        model.fit(x, y, validation_split=0.2, epochs=20, callbacks=[cb])
        # resume later
        start = CkptCallback.restore(model, "runs/exp1")   # 1-based epoch, 0 if none
        model.fit(..., initial_epoch=start, callbacks=[CkptCallback("runs/exp1", ...)])
    """

    name = "ckpt"

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        basis_dict: Mapping[str, str],
        skip_from_start: int = 0,
        frequency: int = 1,
        min_delta: float = 0.0,
        save_last: bool = False,
        keep_top_k: int | None = 1,
        save_weights_only: bool = False,
        include_optimizer: bool = True,
        background: bool = True,
    ) -> None:
        super().__init__(log_dir, basis_dict, skip_from_start, frequency, min_delta)
        self.save_last = _check_bool("save_last", save_last)
        self.save_weights_only = _check_bool("save_weights_only", save_weights_only)
        self.include_optimizer = _check_bool("include_optimizer", include_optimizer)
        self.background = _check_bool("background", background)
        if keep_top_k is not None and (
            isinstance(keep_top_k, bool) or not isinstance(keep_top_k, int) or keep_top_k < 1
        ):
            raise ValueError(
                "keep_top_k must be an integer >= 1 (1 keeps only the best file per key) "
                f"or None (keep every best). Received: keep_top_k={keep_top_k!r}"
            )
        self.keep_top_k = keep_top_k
        self.ext = files.EXT_WEIGHTS if save_weights_only else files.EXT_FULL
        names: dict[str, str] = {}
        for key in self.policy.basis:
            other = names.setdefault(files.best_name(key, self.ext), key)
            if other != key:
                raise ValueError(
                    f"basis keys {other!r} and {key!r} map to the same file name "
                    f"{files.best_name(key, self.ext)!r}; rename one of them. "
                    f"Received: basis_dict={dict(self.policy.basis)!r}"
                )
        #: Whether saves go through a snapshot (else Keras' public save, on this thread).
        #: Turned off for the rest of the run, with a warning, when a snapshot fails or
        #: the first file written from one does not read back as Keras would read it.
        self.snapshots = snapshot_supported() and not uses_legacy_keras()
        self._snapshotter = Snapshotter()
        #: Each key's best as the files on disk hold it (what the manifest records).
        self._recorded_best: dict[str, Any] = copy.deepcopy(self.policy.state_dict()["best"])
        self._checked = False  # whether a file written from a snapshot was checked this run
        self._writer_problem: str | None = None  # set by the worker, handled on this thread
        self._writer_problem_handled = False
        self._last_epoch = 0

    # -- falling back to Keras' public save -----------------------------------------

    def _stop_snapshots(self, reason: str) -> None:
        """Save with Keras' public API from now on; warn (once) why."""
        if self.snapshots:
            self.snapshots = False
            warnings.warn(
                f"cvml-ckpt: {reason}; saving with Keras' model.save on the training thread "
                "for the rest of the run",
                RuntimeWarning,
                stacklevel=3,
            )

    def _handle_writer_problem(self) -> bool:
        """On the training thread: act on a first file the worker found unreadable.

        Its epoch (and any snapshot queued after it) was not saved, so the bests are set
        back to those the files hold, and public saves take over. True if it happened.
        """
        if self._writer_problem is None or self._writer_problem_handled:
            return False
        self._writer_problem_handled = True
        self.worker.wait(raise_error=False)  # later queued jobs only drop their snapshot
        self._stop_snapshots(
            "a checkpoint file written in the background does not read back as Keras reads "
            f"it: {self._writer_problem}"
        )
        state = self.policy.state_dict()
        state["best"] = copy.deepcopy(self._recorded_best)
        self.policy.load_state_dict(state)
        return True

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._checked = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._handle_writer_problem()
        self._last_epoch = epoch + 1
        super().on_epoch_end(epoch, logs)

    # -- saving ------------------------------------------------------------------

    def on_due(self, epoch: int, improved_keys: list[str], logs: dict[str, Any]) -> None:
        targets: list[tuple[str | None, Path]] = [
            (key, self.folder / files.best_name(key, self.ext)) for key in improved_keys
        ]
        if self.save_last:
            targets.append((None, self.folder / files.last_name(self.ext)))
        if not targets:
            return
        snapshot = None
        if self.snapshots:
            try:
                snapshot = self._snapshotter.take(
                    self.model, full=not self.save_weights_only,
                    include_optimizer=self.include_optimizer,
                )
            except Exception as exc:  # Keras internals changed: the public save still works
                self._snapshotter.clear()
                self._stop_snapshots(f"the snapshot failed ({type(exc).__name__}: {exc})")
        if snapshot is None:
            if self.worker.busy:  # one writer of the files and the manifest at a time
                self.wait_for_background()
            self._write(None, epoch, logs, targets, None)
            return
        snapshot.tags = {"epoch": epoch}
        if self.background:
            self.run_in_background(
                f"checkpoint of epoch {epoch}",
                lambda state: self._write(state, epoch, logs, targets, snapshot),
            )
        else:
            self._write(None, epoch, logs, targets, snapshot)

    def _public_save(self, tmp: Path) -> None:
        if self.save_weights_only:
            self.model.save_weights(tmp)
        elif uses_legacy_keras():
            self.model.save(tmp, include_optimizer=self.include_optimizer)
        else:
            self.model.save(tmp)

    def _write_first(self, snapshot: ModelSnapshot | None, tmp: Path, background: bool) -> bool:
        """Write the epoch's file to ``tmp``; return whether it holds the optimizer state.

        The first file a run writes from a snapshot is checked (:func:`check_file`). If
        it fails, on the training thread the same epoch is saved again with Keras'
        public save; on the worker :class:`_UnreadableFile` drops the epoch's files.
        """
        if snapshot is None:
            self._public_save(tmp)
            return self._includes_optimizer(None)
        try:
            write_snapshot(snapshot, tmp)
            problem = None if self._checked else check_file(tmp, snapshot)
        finally:  # its buffers serve the next snapshot
            self._snapshotter.recycle(snapshot)
        if problem is None:
            self._checked = True
            return self._includes_optimizer(snapshot)
        if background:
            raise _UnreadableFile(problem)
        self._stop_snapshots(
            "a checkpoint file written from a snapshot does not read back as Keras reads "
            f"it: {problem}"
        )
        tmp.unlink()
        self._public_save(tmp)
        return self._includes_optimizer(None)

    def _write(
        self,
        state: dict[str, Any] | None,
        epoch: int,
        logs: dict[str, Any],
        targets: list[tuple[str | None, Path]],
        snapshot: ModelSnapshot | None,
    ) -> None:
        """Write the epoch's files (the first one, then links to it), recording each.

        Each file is recorded right after its rename, with the basis state of the keys
        whose files are written so far: the manifest never claims a best whose file
        is not written, nor lags behind a file that is replaced, whichever write fails.
        """
        background = state is not None
        if snapshot is not None and self._writer_problem is not None:
            self._snapshotter.recycle(snapshot)  # queued behind an unreadable file: dropped
            return
        base = state if state is not None else self.policy.state_dict()
        started = time.perf_counter()
        written: Path | None = None
        includes_optimizer = False
        for key, final in targets:
            artifacts = []
            try:
                with atomic_path(final) as tmp:
                    if written is None:
                        includes_optimizer = self._write_first(snapshot, tmp, background)
                    else:
                        _link_or_copy(written, tmp)
                    if key is not None and self.keep_top_k != 1:
                        artifacts.extend(self._keep_previous(key, final))
            except _UnreadableFile as exc:  # nothing renamed nor recorded: the epoch is dropped
                self._writer_problem = str(exc)
                return
            if written is None:
                written = final
            details = {
                "role": files.ROLE_BEST if key is not None else files.ROLE_LAST,
                "format": self.ext.lstrip("."),
                "includes_optimizer": includes_optimizer,
                "size_bytes": final.stat().st_size,
                "write_seconds": round(time.perf_counter() - started, 6),
                "background": background,
            }
            artifacts.append(self.artifact(files.KIND, final, epoch, logs, key, **details))
            if key is not None:
                self._recorded_best[key] = copy.deepcopy(base["best"][key])
            self.record(artifacts, dict(base, best=copy.deepcopy(self._recorded_best)))
            if key is not None and self.keep_top_k is not None:
                self._prune(key)

    def _includes_optimizer(self, snapshot: ModelSnapshot | None) -> bool:
        if snapshot is not None or uses_legacy_keras():
            return self.include_optimizer and not (
                snapshot is None and self.save_weights_only  # tf_keras: no optimizer in h5
            )
        return True  # Keras 3's public save always includes it

    def _previous_entries(self, key: str) -> list[dict[str, Any]]:
        return [
            e for e in files.current_checkpoints(self.folder, self.manifest_artifacts())
            if e.get("basis_key") == key
        ]

    def _keep_previous(self, key: str, final: Path) -> list[Any]:
        """Before ``final`` (the key's best file) is replaced, keep its content by name."""
        if not final.exists():
            return []
        old = [e for e in self._previous_entries(key) if e["file"] == final]
        if not old:
            return []  # a file the manifest does not describe: its epoch is unknown
        entry = old[-1]
        kept = self.folder / files.previous_name(key, int(entry["epoch"]), self.ext)
        with atomic_path(kept) as tmp:
            _link_or_copy(final, tmp)
        details = dict(entry.get("details") or {}, role=files.ROLE_PREVIOUS)
        return [
            self.artifact(
                files.KIND, kept, int(entry["epoch"]), entry.get("metrics"), key, **details
            )
        ]

    def _prune(self, key: str) -> None:
        """Delete this key's previous bests beyond ``keep_top_k - 1``, oldest first."""
        assert self.keep_top_k is not None
        folder = self.folder.resolve()
        previous = [
            e for e in self._previous_entries(key)
            if e.get("details", {}).get("role") == files.ROLE_PREVIOUS
            and e["file"].name != files.best_name(key, self.ext)
            and e["file"].resolve().parent == folder
        ]
        excess = len(previous) - (self.keep_top_k - 1)
        for entry in previous[: max(excess, 0)]:
            with contextlib.suppress(FileNotFoundError):
                entry["file"].unlink()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        try:
            super().on_train_end(logs)
            if self._handle_writer_problem() and self.chief and self._last_epoch:
                # The model still holds the last epoch: save it if it beats the files.
                epoch, logs = self._last_epoch, dict(self.last_logs)
                if self.policy.is_due(epoch):
                    self.on_due(epoch, self.policy.update(epoch, logs), logs)
                self.announce()
        finally:
            self._snapshotter.clear()  # the reusable buffers are as big as the model

    # -- resuming ------------------------------------------------------------------

    @classmethod
    def restore(
        cls,
        model: Any,
        log_dir: str | os.PathLike[str],
        which: str = "latest",
        max_epoch: int | None = None,
    ) -> int:
        """Load a checkpoint of ``log_dir`` into ``model``; return its 1-based epoch.

        ``which="latest"`` loads the most recent checkpoint (of any key, or ``last``);
        a basis key loads that key's best. ``max_epoch`` leaves out later epochs.
        Weights are loaded, and the optimizer state when the file has it (the
        optimizer is built first if needed). Returns 0, loading nothing, when there is
        no such checkpoint; pass the result as ``initial_epoch`` to ``model.fit``.
        """
        folder = Path(log_dir) / cls.name
        if not (folder / "manifest.json").exists():
            return 0
        manifest = Manifest(folder, cls.name)
        return cls._restore_from(model, folder, manifest, which, max_epoch)

    def restore_latest(self, model: Any | None = None, max_epoch: int | None = None) -> int:
        """Load the most recent checkpoint of this callback's folder (epoch <= ``max_epoch``).

        For a training wrapper resuming at ``start_epoch``:
        ``restore_latest(model, max_epoch=start_epoch)``. Returns the 1-based epoch
        loaded, 0 if none.
        """
        self.wait_for_background()
        model = model if model is not None else self.model
        return self._restore_from(model, self.folder, self.manifest, "latest", max_epoch)

    @classmethod
    def _restore_from(
        cls, model: Any, folder: Path, manifest: Manifest, which: str, max_epoch: int | None
    ) -> int:
        if max_epoch is not None and (
            isinstance(max_epoch, bool) or not isinstance(max_epoch, int) or max_epoch < 0
        ):
            raise ValueError(
                f"max_epoch must be an integer >= 0. Received: max_epoch={max_epoch!r}"
            )
        keys = sorted((manifest.basis_state or {}).get("basis", {}))
        if which != "latest" and which not in keys:
            raise ValueError(
                f"which must be 'latest' or a basis key of {folder}: {keys}. "
                f"Received: which={which!r}"
            )
        entry = files.select(folder, manifest.artifacts, which, max_epoch)
        if entry is None:
            return 0
        path: Path = entry["file"]
        optimizer = getattr(model, "optimizer", None)
        has_optimizer = (entry.get("details") or {}).get("includes_optimizer", True)
        if has_optimizer and optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)
        with warnings.catch_warnings():
            if not has_optimizer:  # Keras warns that the file has no optimizer state: we know
                warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            model.load_weights(path)
        return int(read_tags(path).get("epoch", entry["epoch"]))
