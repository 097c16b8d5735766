"""The base class that joins a Keras callback to the basis policy and the artifact
lifecycle.

A callback that writes a file per improved basis key gives two steps: ``snapshot(epoch,
logs)`` on the training thread (a quick, consistent copy) and ``write(job)`` on the
worker, which writes each file under a temporary name (:func:`cvml_core.staging`) and
yields a :class:`~cvml_core.artifacts.artifact.Staged` per file. The core decides which
keys improved, queues the save (:mod:`~cvml_core.artifacts.save_queue`), publishes the
files manifest first (:mod:`~cvml_core.artifacts.ledger`), announces them to plugins and
waits for the worker at train end. docs/plugin-authors.md is the reference of what a
subclass may read and override.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from cvml_core.artifacts.artifact import Artifact, Staged
from cvml_core.artifacts.distribute import is_chief
from cvml_core.artifacts.ledger import Ledger, SaveJob
from cvml_core.artifacts.manifest import Manifest
from cvml_core.artifacts.save_queue import SaveQueue
from cvml_core.artifacts.save_queue import SkipSave as SkipSave  # re-exported
from cvml_core.artifacts.storage import LogDirError as LogDirError  # re-exported
from cvml_core.artifacts.storage import Store, is_url, mask, open_store
from cvml_core.artifacts.worker import BackgroundWorker
from cvml_core.keras_compat import Callback
from cvml_core.plugin_host.loader import call_hook, registered_name
from cvml_core.policy.basis import BasisPolicy, KeyBest
from cvml_core.policy.checks import check_folder


def _float_metrics(logs: Mapping[str, Any] | None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, value in (logs or {}).items():
        try:
            metrics[key] = float(value)
        except (TypeError, ValueError):
            continue
    return metrics


class BasisCallback(Callback):
    """A Keras callback that acts on due epochs where basis keys improved.

    :param log_dir: the run's folder (a path or a URL); this callback writes in
        ``log_dir/<folder>``.
    :param basis_dict: ``{metric: "min"|"max"}``, e.g. ``{"val_loss": "min"}``.
    :param skip_from_start: the first epochs that are never due.
    :param frequency: an epoch ``e`` is due when ``e % frequency == 0``.
    :param min_delta: how much a value must beat the best to count as improved.
    :param folder: this callback's folder in ``log_dir`` (default: its ``name``).
    :param storage_options: for a URL ``log_dir`` (``s3://``, ``gs://``, ...), options
        of its fsspec filesystem (docs/storage.md).

    A subclass takes its own options as keywords and forwards the rest here
    (``**schedule``). The basis state is restored from the folder's ``manifest.json``,
    so a resumed run keeps its bests.
    """

    #: The callback's name (its folder and its label in artifacts): a class default;
    #: each instance's ``name`` is the one its registration or entry point gives a class
    #: that sets none (:func:`~cvml_core.plugin_host.registry.registered_name`).
    name: str = "callback"
    #: What a save is called in messages ("checkpoint of epoch 3 ... failed").
    save_label: ClassVar[str] = "save"
    #: The category of the warnings of failed saves (when not ``strict``).
    warning_category: ClassVar[type[Warning]] = RuntimeWarning
    #: Whether ``TrainInfer`` should hand this callback a sample of the dev set;
    #: a class default that an instance may override (e.g. only when images are on).
    wants_sample_data: bool = False
    #: A failed snapshot or write raises on the training thread (else: one warning).
    strict: bool = False
    #: Write on the background worker (else on the training thread, same files).
    background: bool = True
    #: A newer save replaces, per target, one still waiting (else it waits its turn,
    #: and every decided best gets its file).
    supersede: bool = False

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        basis_dict: Mapping[str, str],
        skip_from_start: int = 0,
        frequency: int = 1,
        min_delta: float = 0.0,
        folder: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.name: str = registered_name(type(self)) or type(self).name
        self.policy = BasisPolicy(basis_dict, skip_from_start, frequency, min_delta)
        location = check_folder("log_dir", log_dir)
        #: ``log_dir`` as given: a ``Path``, or a URL string of an object store.
        self.log_dir: Path | str = location.rstrip("/") if is_url(location) else Path(location)
        #: Where this callback's files live (:mod:`cvml_core.artifacts.storage`): every read and
        #: write of them goes through it.
        self.store: Store = open_store(location, storage_options).child(folder or self.name)
        #: The local folder files are written in: the callback's folder itself, or for
        #: an object store a local staging folder its files are uploaded from.
        self.folder = self.store.local
        #: Whether this process writes (:mod:`cvml_core.artifacts.distribute`); set again, from
        #: the model's strategy, at train begin.
        self.chief = is_chief()
        if self.chief:  # a non-chief process never writes into log_dir
            self.store.probe(f"log_dir={mask(location)!r}")
        #: The folder's manifest and committed bests (:mod:`cvml_core.artifacts.ledger`).
        self.ledger = Ledger(self.folder, self.name, self.policy, self.store)
        if self.chief:  # a run stopped mid-publish: finish it
            adopted, dropped = self.ledger.recover()
            if adopted or dropped:
                warnings.warn(
                    f"{self.name}: the previous run stopped while publishing files in "
                    f"{self.store}: recorded {', '.join(adopted) or 'none'} (renamed "
                    f"into place), dropped {', '.join(dropped) or 'none'} (never renamed)",
                    self.warning_category, stacklevel=2,
                )
        self.ledger.start()
        self.worker = BackgroundWorker(f"cvml-{self.name}")
        self.sample_data: tuple[Any, Any] | None = None
        self.last_logs: dict[str, Any] = {}
        #: The epochs whose save the subclass skipped (:class:`SkipSave`).
        self.skipped: list[int] = []
        self.saves = SaveQueue(self)

    # -- subclass API --------------------------------------------------------------

    def on_due(self, epoch: int, improved_keys: list[str], logs: dict[str, Any]) -> None:
        """Every due epoch (1-based ``epoch``), with the basis keys that improved (maybe
        none) and the epoch's ``logs``; training thread, chief only. Returns nothing."""

    def on_improved(self, epoch: int, improved_keys: list[str], logs: dict[str, Any]) -> None:
        """A due epoch where at least one basis key improved, after :meth:`on_due`;
        training thread, chief only. Returns nothing."""

    def on_finished(self, logs: dict[str, Any]) -> None:
        """Training ended (``logs``: the last epoch's); training thread, every process.
        A save requested here is awaited too (on a process that is not the chief,
        :meth:`save` only takes the snapshot). Returns nothing."""

    def extras_due(self, epoch: int) -> list[str]:
        """Files other than bests to write on due ``epoch`` (e.g. ``["last"]``): they
        reach :meth:`write` as ``job.extras``. Training thread, every process."""
        return []

    def snapshot(self, epoch: int, logs: dict[str, Any]) -> Any:
        """What :meth:`write` needs (``job.snapshot``), copied consistently and quickly
        (e.g. ``self.model.get_weights()``); training thread, every process (reads of
        a distributed model are collective). Raise :class:`SkipSave` to skip the save."""
        raise NotImplementedError

    def write(self, job: SaveJob) -> Iterable[Artifact | Staged | list[Staged]]:
        """Write ``job``'s files (:class:`~cvml_core.artifacts.ledger.SaveJob`) to
        temporary names (:func:`cvml_core.staging`) and yield each as a :class:`Staged`
        (a list: published together); worker (the training thread if ``background`` is
        False), chief only. A key of ``job.keys`` without an artifact in place is rolled
        back to its last committed best (a warning, or an error with ``strict``)."""
        raise NotImplementedError

    def release(self, snapshot: Any) -> None:
        """Free a snapshot that is written, or replaced before being written (worker or
        training thread). Returns nothing."""

    @classmethod
    def demo_options(cls, demo: Any) -> dict[str, Any]:
        """Options for ``cvml demo``, which passes itself (``demo.epochs``,
        ``demo.image_shape``, ``demo.class_names``); log_dir and basis come apart."""
        return {}

    def demo_report(self, log_dir: Path | str) -> list[str]:
        """Lines ``cvml demo`` prints for this callback after training."""
        return []

    def set_sample_data(self, x: Any, y: Any = None) -> None:
        """Give the callback sample inputs (and labels); data passed by the user wins."""
        if self.sample_data is None:
            self.sample_data = (x, y)

    def artifact(
        self,
        kind: str,
        path: str | os.PathLike[str],
        epoch: int,
        logs: Mapping[str, Any] | None,
        basis_key: str | None = None,
        **details: Any,
    ) -> Artifact:
        """Build an :class:`Artifact` of this callback: ``kind`` is the callback's own
        word for the file (``"weights"``), ``basis_key`` the key it is the best for
        (None for other files), ``details`` JSON values kept in the manifest; ``logs``
        become its float ``metrics``. A file of :attr:`folder` is named by its final
        location (a URL for an object store)."""
        if self.store.is_remote and Path(path).parent == self.folder:
            path = self.store.location(Path(path).name)
        return Artifact(
            kind=kind, path=str(path), epoch=epoch, metrics=_float_metrics(logs),
            basis_key=basis_key, callback=self.name, details=details,
        )

    @property
    def writes_files(self) -> bool:
        """Whether this class writes files for its bests (it overrides :meth:`write`)."""
        return type(self).write is not BasisCallback.write

    # -- the lifecycle ---------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        """The folder's manifest."""
        return self.ledger.manifest

    @property
    def committed(self) -> dict[str, KeyBest]:
        """Per key, the best whose file is written (what the manifest records)."""
        return self.ledger.committed

    def save(
        self,
        epoch: int,
        logs: Mapping[str, Any],
        keys: Iterable[str] = (),
        extras: Iterable[str] = (),
    ) -> None:
        """Snapshot now (training thread) and write ``keys``' and ``extras``' files.

        In the background (default) this waits while another save waits, or with
        ``supersede`` replaces it per target; without ``background``, the files are
        written before this returns.
        """
        self.saves.save(epoch, logs, keys, extras)

    def warn_later(self, message: str) -> None:
        """Give ``message`` as a warning on the training thread (safe from the worker)."""
        self.saves.warn_later(message)

    def record(self, artifacts: list[Artifact]) -> None:
        """Add ``artifacts`` to the manifest with the committed basis state; write it.

        Safe from the worker. The artifacts are announced to plugins on the training
        thread, at the next epoch end or at train end.
        """
        self.ledger.record(artifacts)

    def forget(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """Delete files this callback wrote (e.g. retention), manifest first (see
        :meth:`Ledger.forget <cvml_core.artifacts.ledger.Ledger.forget>`). Safe from the worker."""
        return self.ledger.forget(paths)

    def manifest_artifacts(self) -> list[dict[str, Any]]:
        """A copy of the manifest's artifact entries, safe while the worker records."""
        return self.ledger.artifacts()

    def current_artifacts(self) -> list[dict[str, Any]]:
        """The last manifest entry of each file name (the files that stand), oldest
        first; unlike :meth:`manifest_artifacts`, its cost does not grow with the run."""
        return self.ledger.current()

    def run_in_background(self, name: str, job: Callable[[], Any]) -> None:
        """Run ``job()`` on the worker (work that is not a save, e.g. event files).

        Call it from the training thread with what the job needs already copied.
        """
        self.worker.submit(name, job)

    def announce(self) -> None:
        """On the training thread: roll back failed keys, give the warnings, announce
        new files through ``cvml_artifact_saved``, raise a background failure."""
        with self.ledger.lock:
            artifacts, self.ledger.unannounced = self.ledger.unannounced, []
        messages = self.saves.settle()
        for artifact in artifacts:
            call_hook("cvml_artifact_saved", artifact=artifact)
        for message in messages:
            warnings.warn(message, self.warning_category, stacklevel=3)
        self.worker.raise_if_failed()

    def wait_for_background(self, raise_error: bool = True) -> None:
        """Wait for background work, announce what it wrote, raise its failure.

        With ``raise_error=False`` (the caller is already handling another error) a
        background failure is reported as a warning instead, never dropped.
        """
        self.worker.wait(raise_error=False)
        try:
            self.announce()
        except Exception as exc:
            if raise_error:
                raise
            warnings.warn(
                f"callback {self.name!r}: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            if self.ledger.state_dirty and self.chief:
                self.record([])

    # -- Keras hooks ---------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.chief = is_chief(self.model)
        if self.chief:
            self.ledger.recover()
            self.store.remove_stale_temps()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        self.last_logs = logs
        self.announce()
        number = epoch + 1
        if not self.policy.is_due(number):
            return
        with self.ledger.lock:
            improved = self.policy.update(number, logs)
        if self.chief:
            self.on_due(number, improved, logs)
            if improved:
                self.on_improved(number, improved, logs)
        if self.writes_files:
            self.save(number, logs, improved, self.extras_due(number))
        elif improved:
            self.ledger.commit_now(improved)  # a best without a file

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or self.last_logs)
        try:
            self.on_finished(logs)
        finally:
            self.wait_for_background()
