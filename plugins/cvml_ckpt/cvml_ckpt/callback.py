"""The ``ckpt`` callback: the best checkpoint per basis key, atomic, resumable, backgrounded."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cvml_ckpt import backup, files, state
from cvml_ckpt.shadow import optimizer_built
from cvml_ckpt.snapshots import NeedsSource, ShadowSnapshots
from cvml_core.artifacts.artifact import Staged
from cvml_core.artifacts.atomic import staging
from cvml_core.artifacts.callback import BasisCallback, SaveJob
from cvml_core.artifacts.distribute import process_count
from cvml_core.artifacts.manifest import Manifest
from cvml_core.artifacts.storage import LocalStore, Store, is_url, mask, open_store
from cvml_core.keras_compat import keras, uses_legacy_keras
from cvml_core.policy.checks import check_bool

_POSITION = "cvml_backup_position"  # the backup job's position, carried in its logs


class CkptCallback(ShadowSnapshots, BasisCallback):
    """Saves a checkpoint when a basis key improves, without holding training.

    On each due epoch where basis keys improve, the model's and optimizer's variables
    are copied to numpy on the training thread; a background thread assigns them into
    a shadow copy of the model and writes it with Keras' own ``save`` (or
    ``save_weights``), atomically, to ``log_dir/ckpt/best_<key>.keras`` for each
    improved key; the files of one epoch are hard links to one write. The shadow is
    built once per run by the worker, from a ``model.save`` of the live model on
    TensorFlow and torch in one process, from the live model's config on JAX in one
    process (a model whose ``.keras`` file holds assets falls back to the next); else
    the first save of a run holds training about as long as
    ``keras.callbacks.ModelCheckpoint`` (``model.save`` on the training thread).
    ``manifest.json`` beside the files records every file, its epoch and the basis
    state, so a new callback on the same ``log_dir`` keeps the bests of the previous run.

    :param log_dir: the run's folder; files go to ``log_dir/ckpt/``.
    :param basis_dict: ``{metric: "min"|"max"}``, e.g. ``{"val_loss": "min"}``.
    :param schedule: ``skip_from_start``, ``frequency``, ``min_delta`` and ``folder``,
        as for :class:`~cvml_core.artifacts.callback.BasisCallback`.
    :param save_last: also write ``last.keras`` on every due epoch.
    :param keep_top_k: how many bests to keep per key: the current best
        (``best_<key>``) and the ``keep_top_k - 1`` previous ones
        (``best_<key>.epoch<NNNN>``). ``None`` keeps them all. Default 1.
    :param save_weights_only: write ``.weights.h5`` (``model.save_weights``'s format)
        instead of a full ``.keras`` model.
    :param include_optimizer: include the optimizer state, so training resumes exactly.
        In the background the file then holds the compiled loss and optimizer; without
        it the file is an uncompiled model. (On the training thread, Keras 3's own
        ``save`` always includes the optimizer.)
    :param background: write on the background thread (default). False saves with the
        live model's ``model.save`` / ``save_weights`` on the training thread, as
        ``ModelCheckpoint`` does: for a model that ``keras.models.load_model`` cannot
        rebuild, and always with ``tf_keras``.
    :param backup_every_steps: also write a rolling backup (``backup.weights.h5``: the
        weights, optimizer state and training position) every this many batches;
        ``None`` (default): none. Independent of the basis and the schedule.
    :param backup_every_seconds: ... or every this many seconds (either or both).
    :param keep_backup: keep the backup when training ends (default: deleted, as
        Keras' ``BackupAndRestore`` does). A backup in the folder is resumed at the
        next ``fit``'s start, at its epoch and step. With ``tf_keras`` the backup is
        its ``BackupAndRestore(save_freq=backup_every_steps)`` in ``ckpt/backup/``
        (steps only, local ``log_dir`` only).
    :param snapshot_to: where a background save's snapshot waits for the writer:
        ``"auto"`` (default) a device copy when the variables live on an accelerator
        with room for one more copy with margin (:func:`cvml_ckpt.state.has_room`),
        else host memory; ``"device"`` a device copy whenever none exists yet;
        ``"host"`` host memory only (accelerator memory does not grow). At most one
        device copy exists at a time; one that cannot get memory falls back to host.
    :param waiting_host_bytes: the host memory a snapshot may take while it waits for
        the previous write (beyond the one host copy of the model the writer keeps).
        ``None`` (default): a tenth of the state, at least 16 MiB. A save that would
        need more is skipped: its keys roll back, so a later improvement saves, and
        its epoch is counted in ``skipped``.
    :param device_memory: ``() -> (free_bytes, total_bytes) | None``, the query of the
        accelerator's memory (default: the framework's own counters,
        :func:`cvml_ckpt.state.device_memory`; None means host memory).

    A save due while one snapshot already waits replaces it (``supersede``): the
    writer's queue never grows. ``snapshot_counts`` counts where snapshots went.

    Example::

        cb = CkptCallback("runs/exp1", {"val_loss": "min"}, skip_from_start=4)
        model.fit(x, y, validation_split=0.2, epochs=20, callbacks=[cb])
        # resume later
        start = CkptCallback.restore(model, "runs/exp1")   # 1-based epoch, 0 if none
        model.fit(..., initial_epoch=start, callbacks=[CkptCallback("runs/exp1", ...)])
    """

    name = "ckpt"
    save_label = "checkpoint"
    strict = True  # a checkpoint that cannot be written stops training
    supersede = True  # a newer best replaces a waiting one: the queue never grows

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        basis_dict: Mapping[str, str],
        *,
        save_last: bool = False,
        keep_top_k: int | None = 1,
        save_weights_only: bool = False,
        include_optimizer: bool = True,
        background: bool = True,
        snapshot_to: str = "auto",
        waiting_host_bytes: int | None = None,
        device_memory: state.MemoryQuery | None = None,
        backup_every_steps: int | None = None,
        backup_every_seconds: float | None = None,
        keep_backup: bool = False,
        **schedule: Any,
    ) -> None:
        steps = backup.check_interval("backup_every_steps", backup_every_steps, int)
        seconds = backup.check_interval("backup_every_seconds", backup_every_seconds, float)
        legacy = bool(steps or seconds) and uses_legacy_keras()
        if legacy and seconds is not None:
            raise ValueError(
                "backup_every_seconds needs Keras 3; with TF_USE_LEGACY_KERAS=1 backups "
                "are tf_keras' BackupAndRestore, which counts steps: use "
                f"backup_every_steps. Received: backup_every_seconds={seconds!r}"
            )
        if legacy and is_url(log_dir):
            raise ValueError(
                "backup_every_steps with TF_USE_LEGACY_KERAS=1 needs a local log_dir "
                "(tf_keras' BackupAndRestore writes there). Received: "
                f"log_dir={mask(str(log_dir))!r}"
            )
        super().__init__(log_dir, basis_dict, **schedule)
        self.keep_backup = check_bool("keep_backup", keep_backup)
        #: With tf_keras, the backups are its own ``BackupAndRestore(save_freq=N)`` in
        #: ``log_dir/ckpt/backup/``, driven by this callback (it resumes at the step).
        self.legacy_backup = (
            keras.callbacks.BackupAndRestore(
                str(self.folder / "backup"), save_freq=steps,
                delete_checkpoint=not self.keep_backup,
            ) if legacy else None
        )
        if self.legacy_backup is not None:
            steps = None  # (it records the batch in progress at each batch begin)
            self.on_train_batch_begin = self.legacy_backup.on_train_batch_begin
        self.backups = backup.Schedule(steps, seconds) if steps or seconds else None
        if self.backups is None and self.legacy_backup is None:
            # Nothing to do per batch: keep Keras' own (default) batch hook, so that
            # Keras still dispatches every callback's batch hooks asynchronously.
            self.on_train_batch_end = super().on_train_batch_end  # type: ignore[method-assign]
        #: Backups written, and those due while the previous one was still being
        #: written (taken at the next batch end instead).
        self.backups_taken = 0
        self.backups_deferred = 0
        #: ``(epoch_index, step)`` of the backup this run resumed from, else None.
        self.resumed_from: tuple[int, int] | None = None
        self._resumed: dict[str, Any] | None = None
        self._epoch_index = 0
        self._batches_done = 0  # in the current epoch
        self._metrics_left: dict[str, Any] = {}  # of the resumed epoch, set after a step
        self.save_last = check_bool("save_last", save_last)
        self.save_weights_only = check_bool("save_weights_only", save_weights_only)
        self.include_optimizer = check_bool("include_optimizer", include_optimizer)
        self.background = check_bool("background", background) and not uses_legacy_keras()
        if keep_top_k is not None and (
            isinstance(keep_top_k, bool) or not isinstance(keep_top_k, int) or keep_top_k < 1
        ):
            raise ValueError(
                "keep_top_k must be an integer >= 1 (1 keeps only the best file per key) "
                f"or None (keep every best). Received: keep_top_k={keep_top_k!r}"
            )
        self.keep_top_k = keep_top_k
        self._init_snapshots(snapshot_to, waiting_host_bytes, device_memory)
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
    # -- training thread -----------------------------------------------------------

    def extras_due(self, epoch: int) -> list[str]:
        return [files.ROLE_LAST] if self.save_last else []

    # -- worker --------------------------------------------------------------------

    def write(self, job: SaveJob) -> Iterator[Staged | list[Staged]]:
        """Write the first file, then link the others to it, each to a temporary name;
        yield each (with the previous best it keeps, if any) for the core to rename
        into place and record, manifest first; then apply retention."""
        started = time.perf_counter()
        if backup.ROLE in job.extras:  # a backup is a job of its own (see _take_backup)
            yield self._write_backup(job, started)
            return
        targets: list[tuple[str | None, Path]] = [
            (key, self.folder / files.best_name(key, self.ext)) for key in job.keys
        ]
        if files.ROLE_LAST in job.extras:
            targets.append((None, self.folder / files.last_name(self.ext)))
        try:
            yield from self._write_files(job, targets, started)
        except NeedsSource:
            # Nothing published: the core rolls the job's keys back (a later
            # improvement saves); the next save writes the shadow's source.
            self.snapshot_counts["rebuilt"] += 1

    def _write_files(
        self, job: SaveJob, targets: list[tuple[str | None, Path]], started: float
    ) -> Iterator[list[Staged]]:
        written: Path | None = None  # the first file, while still local
        includes_optimizer = False
        for key, final in targets:
            kept: list[Staged] = []
            with staging(final) as tmp:
                if written is None:
                    includes_optimizer = self._write_to(job.snapshot, tmp)
                else:
                    LocalStore(written.parent).fetch(written.name, tmp)
            try:
                if key is not None and self.keep_top_k != 1:
                    kept = self._keep_previous(key, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            details = {
                "role": files.ROLE_BEST if key is not None else files.ROLE_LAST,
                "format": self.ext.lstrip("."),
                "includes_optimizer": includes_optimizer,
                "size_bytes": tmp.stat().st_size,
                "write_seconds": round(time.perf_counter() - started, 6),
                "background": job.background,
            }
            if written is None and len(targets) > 1:  # the others link to a local copy
                written = tmp.with_name(f"{tmp.name}.first")
                LocalStore(tmp.parent).fetch(tmp.name, written)
            # The kept previous best first: if only it lands, the best is unchanged.
            yield kept + [
                Staged(tmp, self.artifact(files.KIND, final, job.epoch, job.logs, key, **details))
            ]
            if key is not None and self.keep_top_k is not None:
                self._prune(key)
        if written is not None:
            with contextlib.suppress(OSError):
                written.unlink()

    def _write_backup(self, job: SaveJob, started: float) -> Staged:
        """The backup file to a temporary name, for the core to rename over the
        previous backup (which stays until then) and record."""
        final = self.folder / backup.NAME
        position = job.logs[_POSITION]
        with staging(final) as tmp:
            includes_optimizer = self._write_to(job.snapshot, tmp, weights_only=True)
        details = {
            "role": backup.ROLE, "format": "weights.h5",
            "includes_optimizer": includes_optimizer, **position,
            "size_bytes": tmp.stat().st_size,
            "write_seconds": round(time.perf_counter() - started, 6),
            "background": job.background,
        }
        logs = {k: v for k, v in job.logs.items() if k != _POSITION}
        return Staged(tmp, self.artifact(backup.KIND, final, job.epoch, logs, None, **details))

    def backup_start(self) -> tuple[int, int] | None:
        """``(epoch_index, step)`` where the next ``fit`` with this callback starts, from
        the backup in the folder (0-based epoch, as Keras' ``initial_epoch``; batches
        done in it); None without a backup (and with tf_keras, whose backup is its own)."""
        entry = self._backup_entry() if self.legacy_backup is None else None
        if entry is None:
            return None
        details = entry.get("details") or {}
        return int(details["epoch_index"]), int(details["step"])

    def _backup_entry(self) -> dict[str, Any] | None:
        """The manifest entry of the backup in the folder, if its file is there."""
        entries = [e for e in self.current_artifacts() if e.get("kind") == backup.KIND]
        if not entries or not self.store.exists(backup.NAME):
            return None
        return entries[-1]

    def _previous_entries(self, key: str) -> list[dict[str, Any]]:
        names = self.store.names()
        return [
            e for e in files.current_checkpoints(
                self.folder, self.current_artifacts(), names.__contains__)
            if e.get("basis_key") == key
        ]

    def _keep_previous(self, key: str, final: Path) -> list[Staged]:
        """Before ``final`` (the key's best file) is replaced, keep its content by name
        (a temporary file, published with the new best)."""
        old = [e for e in self._previous_entries(key) if e["file"] == final]
        if not old:
            return []  # none, or a file the manifest does not describe (epoch unknown)
        entry = old[-1]
        kept = self.folder / files.previous_name(key, int(entry["epoch"]), self.ext)
        with staging(kept) as tmp:
            self.store.fetch(final.name, tmp)
        details = dict(entry.get("details") or {}, role=files.ROLE_PREVIOUS)
        return [Staged(tmp, self.artifact(
            files.KIND, kept, int(entry["epoch"]), entry.get("metrics"), key, **details
        ))]

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
        # Manifest first (the core's order): the entries go, then the files.
        self.forget(entry["file"] for entry in previous[: max(excess, 0)])

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        if self.legacy_backup is not None:
            self.legacy_backup.set_model(model)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self.legacy_backup is not None:
            self.legacy_backup.on_train_begin(logs)
        self._one_process = process_count(self.model) == 1
        if self.backups is not None and self.backups.seconds and not self._one_process:
            raise ValueError(
                "backup_every_seconds cannot be used across processes (each one's clock "
                "would decide apart, and the saves' reads are collective); use "
                f"backup_every_steps. Received: backup_every_seconds={self.backups.seconds!r}"
            )
        self._resume_from_backup()
        if self.backups is not None:
            self.backups.reset()

    def _resume_from_backup(self) -> None:
        """Load the folder's backup, if any, and start this fit at its epoch and step."""
        entry = self._backup_entry()
        self._resumed = self.resumed_from = None
        if entry is None:
            return
        details = dict(entry.get("details") or {})
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer_built(optimizer):
            optimizer.build(model.trainable_variables)
        with self.store.local_copy(backup.NAME) as path:  # a download on an object store
            model.load_weights(path)
        backup.restore_seed_state(model, details)
        epoch_index, step = int(details["epoch_index"]), int(details["step"])
        backup.start_fit_at(model, epoch_index, step)
        self._resumed = details
        self.resumed_from = (epoch_index, step)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.legacy_backup is not None:
            self.legacy_backup.on_epoch_begin(epoch, logs)
        self._epoch_index = epoch
        self._batches_done = 0
        resumed = self._resumed
        if resumed is not None and int(resumed["epoch_index"]) == epoch:
            backup.end_fit_at(self.model, skipping=False)
            self._batches_done = int(resumed["step"])
            self._metrics_left = backup.restore_metrics_state(
                self.model, dict(resumed.get("metrics_state") or {})
            )
            self._resumed = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.legacy_backup is not None:
            self.legacy_backup.on_train_batch_end(batch, logs)
            return
        done = batch + 1  # batches done in this epoch
        if done <= self._batches_done:
            return  # a batch a resumed fit skipped
        if self._metrics_left:  # built by the first step (TensorFlow): add their sums
            backup.restore_metrics_state(self.model, self._metrics_left, add=True)
            self._metrics_left = {}
        if self.backups is None:
            return
        new, self._batches_done = done - self._batches_done, done
        if self.backups.step(new) and done != (self.params or {}).get("steps"):
            self._take_backup(logs)  # (at an epoch's last batch the epoch end takes it)

    def _take_backup(self, logs: dict[str, Any] | None) -> None:
        """Snapshot now, write in the background. While the previous backup is still
        being written the new one is deferred to the next batch end (counted in
        ``backups_deferred``), never queued; across processes (collective reads) every
        process takes it, waiting for room as a best does."""
        assert self.backups is not None
        if self.chief and self.background and self._one_process and self.worker.busy:
            self.backups_deferred += 1
            return
        self.backups.reset()
        model = self.model
        sync = getattr(model, "jax_state_sync", None)
        if sync is not None:  # on JAX, fit keeps the state apart from the variables
            sync()
        optimizer = getattr(model, "optimizer", None)
        position = {
            "epoch_index": self._epoch_index,
            "step": self._batches_done,
            "iterations": (
                int(keras.ops.convert_to_numpy(optimizer.iterations))
                if optimizer is not None else None
            ),
            **backup.small_state(model),
        }
        if not self._batches_done:  # an epoch end: the next epoch's metrics start at 0
            position["metrics_state"] = {}
        self.save(self._epoch_index + 1, dict(logs or {}, **{_POSITION: position}),
                  extras=[backup.ROLE])
        self.backups_taken += 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        try:
            super().on_epoch_end(epoch, logs)
            if self.legacy_backup is not None:
                self.legacy_backup.on_epoch_end(epoch, logs)
            if self.backups is not None and self.backups.step(0):
                # After the bests: a resume starts the next epoch, not this one's end.
                self._epoch_index, self._batches_done = epoch + 1, 0
                self._take_backup(logs)
        except BaseException:  # training stops here: Keras calls no on_train_end
            self.worker.wait(raise_error=False)
            self._drop_shadow()
            raise

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        try:
            super().on_train_end(logs)
            if self.legacy_backup is not None:
                self.legacy_backup.on_train_end(logs)
        finally:
            self._drop_shadow()
            if self.resumed_from is not None:
                backup.end_fit_at(self.model)
        # The run finished: its backup is stale (a kill or an error skips this).
        if self.chief and not self.keep_backup and self._backup_entry() is not None:
            self.forget([self.folder / backup.NAME])
            self.record([])  # the delete done: no pending entry left

    # -- resuming ------------------------------------------------------------------

    @classmethod
    def restore(
        cls,
        model: Any,
        log_dir: str | os.PathLike[str],
        which: str = "latest",
        max_epoch: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> int:
        """Load a checkpoint of ``log_dir`` (a folder or a URL such as ``s3://b/run``,
        with its ``storage_options``) into ``model``; return its 1-based epoch.

        ``which="latest"`` loads the most recent checkpoint (of any key, or ``last``);
        a basis key loads that key's best. ``max_epoch`` leaves out later epochs.
        Weights are loaded, and the optimizer state when the file has it (the
        optimizer is built first if needed). The epoch comes from the manifest, the
        record of every file. Returns 0, loading nothing, when there is no such
        checkpoint; pass the result as ``initial_epoch`` to ``model.fit``.
        """
        store = open_store(log_dir, storage_options).child(cls.name)
        if not store.exists("manifest.json"):
            return 0
        manifest = Manifest(store, cls.name)
        return cls._restore_from(model, store, manifest.artifacts,
                                 manifest.basis_state, which, max_epoch)

    def restore_latest(self, model: Any | None = None, max_epoch: int | None = None) -> int:
        """Load the most recent checkpoint of this callback's folder (epoch <= ``max_epoch``).

        For a training wrapper resuming at ``start_epoch``:
        ``restore_latest(model, max_epoch=start_epoch)``. Returns the 1-based epoch
        loaded, 0 if none.
        """
        self.wait_for_background()
        model = model if model is not None else self.model
        return self._restore_from(model, self.store, self.manifest_artifacts(),
                                  self.manifest.basis_state, "latest", max_epoch)

    @classmethod
    def _restore_from(
        cls,
        model: Any,
        store: Store,
        artifacts: list[dict[str, Any]],
        basis_state: Mapping[str, Any] | None,
        which: str,
        max_epoch: int | None,
    ) -> int:
        if max_epoch is not None and (
            isinstance(max_epoch, bool) or not isinstance(max_epoch, int) or max_epoch < 0
        ):
            raise ValueError(
                f"max_epoch must be an integer >= 0. Received: max_epoch={max_epoch!r}"
            )
        keys = sorted((basis_state or {}).get("basis", {}))
        if which != "latest" and which not in keys:
            raise ValueError(
                f"which must be 'latest' or a basis key of {store}: {keys}. "
                f"Received: which={which!r}"
            )
        entry = files.select(store.local, artifacts, which, max_epoch, store.names().__contains__)
        if entry is None:
            return 0
        name = entry["file"].name
        optimizer = getattr(model, "optimizer", None)
        has_optimizer = (entry.get("details") or {}).get("includes_optimizer", True)
        if has_optimizer and optimizer is not None and not optimizer_built(optimizer):
            optimizer.build(model.trainable_variables)
        with warnings.catch_warnings():
            if not has_optimizer:  # Keras warns that the file has no optimizer state: we know
                warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            with store.local_copy(name) as path:
                model.load_weights(path)
        return int(entry["epoch"])
