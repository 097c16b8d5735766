"""The base class that joins a Keras callback to the basis policy.

Subclass :class:`BasisCallback` and override any of:

* ``on_improved(epoch, improved_keys, logs)``: a due epoch where basis keys improved.
* ``on_due(epoch, improved_keys, logs)``: every due epoch (``improved_keys`` may be
  empty); called before ``on_improved``.
* ``on_finished(logs)``: training ended, before the background work is awaited.

``epoch`` is 1-based, as Keras prints it. Slow work goes to :meth:`run_in_background`;
files are written with :func:`cvml_core.atomic.atomic_path` and recorded with
:meth:`record`, which keeps ``manifest.json`` and announces each file to plugins
through ``cvml_artifact_saved``. Example::

    class EpochLogger(BasisCallback):
        name = "epoch-logger"

        def on_improved(self, epoch, improved_keys, logs):
            path = self.folder / f"best_{improved_keys[0]}.txt"
            atomic_write_text(path, f"{epoch} {logs}")
            self.record([self.artifact("note", path, epoch, logs, improved_keys[0])])
"""

from __future__ import annotations

import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from cvml_core.artifact import Artifact, Manifest
from cvml_core.atomic import remove_stale_temps
from cvml_core.basis import BasisPolicy
from cvml_core.keras_compat import Callback
from cvml_core.plugins import call_hook
from cvml_core.worker import BackgroundWorker


class LogDirError(OSError):
    """``log_dir`` cannot be created or written."""


def _float_metrics(logs: Mapping[str, Any] | None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, value in (logs or {}).items():
        try:
            metrics[key] = float(value)
        except (TypeError, ValueError):
            continue
    return metrics


def is_chief(model: Any) -> bool:
    """Whether this process writes files: always, except non-chief multi-worker tasks."""
    strategy = getattr(model, "distribute_strategy", None)
    resolver: Any = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


class BasisCallback(Callback):
    """A Keras callback that acts on due epochs where basis keys improved.

    :param log_dir: the run's folder; this callback writes in ``log_dir/<folder>``
        (``folder`` defaults to the class's ``name``).
    :param basis_dict: ``{metric: "min"|"max"}``, e.g. ``{"val_loss": "min"}``.
    :param skip_from_start: the first epochs that are never due.
    :param frequency: an epoch ``e`` is due when ``e % frequency == 0``.
    :param min_delta: how much a value must beat the best to count as improved.

    The basis state is restored from the folder's ``manifest.json`` if one exists,
    so a resumed run keeps its bests.
    """

    #: The registered name, used as folder name and in artifacts.
    name: ClassVar[str] = "callback"
    #: Whether ``TrainInfer`` should hand this callback a sample of the dev set;
    #: a class default that an instance may override (e.g. only when images are on).
    wants_sample_data: bool = False

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        basis_dict: Mapping[str, str],
        skip_from_start: int = 0,
        frequency: int = 1,
        min_delta: float = 0.0,
        folder: str | None = None,
    ) -> None:
        super().__init__()
        self.policy = BasisPolicy(basis_dict, skip_from_start, frequency, min_delta)
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(f"log_dir must be a folder path. Received: log_dir={log_dir!r}")
        self.log_dir = Path(log_dir)
        self.folder = self.log_dir / (folder or self.name)
        self._check_writable()
        self.manifest = Manifest(self.folder, self.name)
        if self.manifest.basis_state:
            try:
                self.policy.load_state_dict(self.manifest.basis_state)
            except ValueError as exc:
                raise ValueError(f"{exc} (saved in {self.manifest.path})") from exc
        self.worker = BackgroundWorker(f"cvml-{self.name}")
        self.sample_data: tuple[Any, Any] | None = None
        self.last_logs: dict[str, Any] = {}
        self.chief = True
        self._lock = threading.Lock()
        self._unannounced: list[Artifact] = []

    def _check_writable(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".tmp-probe-"):
                pass
        except OSError as exc:
            raise LogDirError(
                exc.errno,
                f"log_dir={str(self.log_dir)!r} cannot be used: {self.folder} cannot be "
                f"created or written ({exc.strerror or exc})",
            ) from exc

    # -- subclass API --------------------------------------------------------------

    def on_due(self, epoch: int, improved_keys: list[str], logs: dict[str, Any]) -> None:
        """Every due epoch, with the keys that improved (maybe none)."""

    def on_improved(self, epoch: int, improved_keys: list[str], logs: dict[str, Any]) -> None:
        """A due epoch where at least one basis key improved."""

    def on_finished(self, logs: dict[str, Any]) -> None:
        """Training ended; background work submitted here is awaited too."""

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
        """Build an :class:`Artifact` of this callback."""
        return Artifact(
            kind=kind, path=str(path), epoch=epoch, metrics=_float_metrics(logs),
            basis_key=basis_key, callback=self.name, details=details,
        )

    def record(self, artifacts: list[Artifact], state: dict[str, Any] | None = None) -> None:
        """Add ``artifacts`` and the basis ``state`` to the manifest and write it.

        Safe from the background worker. ``state`` defaults to the current basis
        state; :meth:`run_in_background` hands its job the state as of submission,
        which is the state to record when the job writes every key that improved by
        then. The artifacts are announced to plugins on the training thread, at the
        next epoch end or at train end.
        """
        with self._lock:
            for artifact in artifacts:
                self.manifest.add(artifact)
            self.manifest.basis_state = state if state is not None else self.policy.state_dict()
            self.manifest.write()
            self._unannounced.extend(artifacts)

    def manifest_artifacts(self) -> list[dict[str, Any]]:
        """A copy of the manifest's artifact entries, safe while the worker records."""
        with self._lock:
            return [dict(entry) for entry in self.manifest.artifacts]

    def run_in_background(
        self, name: str, job: Callable[[dict[str, Any]], Any], supersede: bool = False
    ) -> None:
        """Run ``job(state)`` on the worker; ``state`` is the basis state as of now.

        Call it from the training thread after taking a consistent snapshot of what
        the job needs. The job should write with ``atomic_path`` and call
        ``self.record(artifacts, state)``.
        """
        state = self.policy.state_dict()
        self.worker.submit(name, lambda: job(state), supersede=supersede)

    def announce(self) -> None:
        """Re-raise a background failure, then call ``cvml_artifact_saved`` for new files."""
        with self._lock:
            artifacts, self._unannounced = self._unannounced, []
        for artifact in artifacts:
            call_hook("cvml_artifact_saved", artifact=artifact)
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

    # -- Keras hooks ---------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.chief = is_chief(self.model)
        if self.chief:
            remove_stale_temps(self.folder)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        self.last_logs = logs
        self.announce()
        number = epoch + 1
        if not self.policy.is_due(number):
            return
        improved = self.policy.update(number, logs)
        if not self.chief:
            return
        self.on_due(number, improved, logs)
        if improved:
            self.on_improved(number, improved, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or self.last_logs)
        try:
            if self.chief:
                self.on_finished(logs)
        finally:
            self.wait_for_background()
