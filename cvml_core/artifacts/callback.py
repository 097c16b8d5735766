"""The base class that joins a Keras callback to the basis policy and the artifact
lifecycle: ``snapshot`` on the training thread, ``write`` on the worker, published
manifest first, announced to plugins. docs/plugin-authors.md is the subclass reference."""

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

    It writes in ``log_dir/<folder>`` (a path or a URL; ``storage_options`` for its
    fsspec filesystem), restoring its bests from the folder's ``manifest.json``; the
    schedule is :class:`BasisPolicy`'s. Arguments and class attributes:
    docs/plugin-authors.md (``name``: the registered name, else this default)."""

    name: str = "callback"
    save_label: ClassVar[str] = "save"
    warning_category: ClassVar[type[Warning]] = RuntimeWarning
    wants_sample_data: bool = False
    strict: bool = False
    background: bool = True
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
        self.log_dir: Path | str = location.rstrip("/") if is_url(location) else Path(location)
        self.store: Store = open_store(location, storage_options).child(folder or self.name)
        #: Where files are written: the folder itself, or an object store's staging folder.
        self.folder = self.store.local
        #: Whether this process writes (set again from the model at train begin).
        self.chief = is_chief()
        if self.chief:  # a non-chief process never writes into log_dir
            self.store.probe(f"log_dir={mask(location)!r}")
        self.ledger = Ledger(self.store, self.name, self.policy)
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
        self.skipped: list[int] = []
        self.saves = SaveQueue(self)

    def on_due(self, epoch: int, improved_keys: list[str], logs: dict[str, Any]) -> None:
        """Every due 1-based ``epoch``, with the keys that improved (maybe none); chief."""

    def on_improved(self, epoch: int, improved_keys: list[str], logs: dict[str, Any]) -> None:
        """A due epoch where at least one basis key improved, after :meth:`on_due`; chief."""

    def on_finished(self, logs: dict[str, Any]) -> None:
        """Training ended (``logs``: the last epoch's); a save requested here is awaited."""

    def extras_due(self, epoch: int) -> list[str]:
        """Files other than bests to write on due ``epoch`` (``job.extras``, e.g. "last")."""
        return []

    def snapshot(self, epoch: int, logs: dict[str, Any]) -> Any:
        """A quick, consistent copy of what :meth:`write` needs, on every process (reads
        of a distributed model are collective); raise :class:`SkipSave` to skip the save."""
        raise NotImplementedError

    def write(self, job: SaveJob) -> Iterable[Artifact | Staged | list[Staged]]:
        """Write ``job``'s files under :func:`cvml_core.staging` names and yield a
        :class:`Staged` per file (a list: published together); chief only. A key of
        ``job.keys`` with no file in place is rolled back to its committed best."""
        raise NotImplementedError

    def release(self, snapshot: Any) -> None:
        """Free a snapshot that is written, or replaced before being written."""

    @classmethod
    def demo_options(cls, demo: Any) -> dict[str, Any]:
        """Options for ``cvml demo`` (``demo.epochs``, ``.image_shape``, ``.class_names``)."""
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
        """This callback's :class:`Artifact` of a file, named by its final location."""
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

    @property
    def manifest(self) -> Manifest:
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
        """Snapshot now and write ``keys``' and ``extras``' files (see ``supersede``)."""
        self.saves.save(epoch, logs, keys, extras)

    def warn_later(self, message: str) -> None:
        """Give ``message`` as a warning on the training thread (safe from the worker)."""
        self.saves.warn_later(message)

    def record(self, artifacts: list[Artifact]) -> None:
        """Add ``artifacts`` to the manifest and write it (safe from the worker)."""
        self.ledger.record(artifacts)

    def forget(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """Delete files this callback wrote, manifest first (:meth:`Ledger.forget`)."""
        return self.ledger.forget(paths)

    def manifest_artifacts(self) -> list[dict[str, Any]]:
        """A copy of the manifest's artifact entries, safe while the worker records."""
        with self.ledger.lock:
            return [dict(entry) for entry in self.manifest.artifacts]

    def current_artifacts(self) -> list[dict[str, Any]]:
        """The last manifest entry of each file name (the files that stand), oldest first."""
        with self.ledger.lock:
            return [dict(entry) for entry in self.manifest.current]

    def run_in_background(self, name: str, job: Callable[[], Any]) -> None:
        """Run ``job()`` (not a save; its inputs copied already) on the worker."""
        self.worker.submit(name, job)

    def announce(self) -> None:
        """Roll back failed keys, warn, announce new files, raise a background failure."""
        with self.ledger.lock:
            artifacts, self.ledger.unannounced = self.ledger.unannounced, []
        messages = self.saves.settle()
        for artifact in artifacts:
            call_hook("cvml_artifact_saved", artifact=artifact)
        for message in messages:
            warnings.warn(message, self.warning_category, stacklevel=3)
        self.worker.raise_if_failed()

    def wait_for_background(self, raise_error: bool = True) -> None:
        """Wait for background work, announce what it wrote, raise its failure (with
        ``raise_error=False``, while handling another error: warn it instead)."""
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
