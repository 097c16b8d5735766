"""What ``TrainInfer`` asks of a callback beyond Keras' ``Callback``, declared once.

Every part is optional: ``TrainInfer`` checks each with ``isinstance`` and skips a
callback that lacks it. :class:`~cvml_core.artifacts.callback.BasisCallback` has all of them
but :class:`Restores` and :class:`ResumesBackup`, which ``ckpt`` adds; a plain
``keras.callbacks.Callback`` has none and is only given to ``model.fit``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cvml_core.policy.basis import BasisPolicy


@runtime_checkable
class WritesFolder(Protocol):
    """Writes its files (and ``manifest.json``) in ``folder``; two callbacks of one
    run may not share a folder."""

    folder: Path


@runtime_checkable
class TracksBasis(Protocol):
    """Keeps a best per basis key (``policy.basis``, ``policy.best``); the run's
    basis and its end summary include them."""

    policy: BasisPolicy


@runtime_checkable
class ListsArtifacts(Protocol):
    """Lists the files it has recorded, oldest first, as ``Artifact`` dicts."""

    def manifest_artifacts(self) -> list[dict[str, Any]]: ...


@runtime_checkable
class WantsSampleData(Protocol):
    """Wants sample examples of the dev set before training when ``wants_sample_data``
    is true and it has none (``sample_data`` is None)."""

    wants_sample_data: bool
    sample_data: Any

    def set_sample_data(self, x: Any, y: Any = None) -> None: ...


@runtime_checkable
class WaitsForBackground(Protocol):
    """Has background work to await when training stops by an error (Keras does not
    call ``on_train_end`` then); with ``raise_error=False`` it warns instead."""

    def wait_for_background(self, raise_error: bool = True) -> None: ...


@runtime_checkable
class Restores(Protocol):
    """Restores ``model`` from its newest file of an epoch <= ``max_epoch`` on a
    resume; returns that epoch, 0 when it has none."""

    def restore_latest(self, model: Any, max_epoch: int) -> int: ...


@runtime_checkable
class ResumesBackup(Protocol):
    """Resumes a ``fit`` from a backup in its folder, when there is one: at the 0-based
    epoch and the step that :meth:`backup_start` returns (None: no backup)."""

    def backup_start(self) -> tuple[int, int] | None: ...


@runtime_checkable
class InDemo(Protocol):
    """Takes part in ``cvml demo``: the class picks its options for the demo's data
    (``demo.epochs``, ``demo.image_shape``, ``demo.class_names``), the instance adds
    lines to the demo's report."""

    @classmethod
    def demo_options(cls, demo: Any) -> dict[str, Any]: ...

    def demo_report(self, log_dir: Path | str) -> list[str]: ...
