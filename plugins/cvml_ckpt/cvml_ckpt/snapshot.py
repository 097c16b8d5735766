"""A consistent, detached copy of what ``model.save`` would write, taken on the training thread.

:class:`Snapshotter` walks the model with Keras' own saving walk (the code behind
``model.save`` and ``model.save_weights``) and copies every variable a layer or the
optimizer hands to its store into numpy arrays, plus the model config and assets for a
``.keras`` file. The file is then written by :mod:`cvml_ckpt.writer` on the background
worker without touching the live model, so training goes on while it is written.

What keeps the training thread's share small:

* the walk (``dir()`` of every layer: a third of a second on MobileNetV2) runs once;
  later snapshots replay the list of (path, layer) it found, while the model's and
  the optimizer's variable counts are unchanged;
* each variable is read without an intermediate copy and copied once, into a buffer
  reused from an earlier snapshot whose file is written (:meth:`Snapshotter.recycle`),
  so a save costs one memcpy of warm memory rather than fresh pages.

The walk uses Keras 3 internals (``keras.src.saving.saving_lib``), isolated in this
module. :func:`snapshot_supported` says whether they are present; when they are not
(another Keras, ``tf_keras``), :class:`~cvml_ckpt.callback.CkptCallback` saves with the
public ``model.save`` on the training thread instead, and it does the same when
:meth:`Snapshotter.take` raises (e.g. :class:`SnapshotError`: a Keras whose walk no
longer shows which object stores what).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:  # Keras 3 internals; see snapshot_supported()
    from keras.src.optimizers.base_optimizer import BaseOptimizer as _BaseOptimizer
    from keras.src.saving import saving_lib as _saving_lib
except ImportError:  # pragma: no cover - depends on the installed Keras
    _saving_lib = None
    _BaseOptimizer = None

TAG_KEY = "cvml_ckpt"


class SnapshotError(RuntimeError):
    """The installed Keras' saving walk does not work the way the snapshot needs."""


@dataclass
class Entry:
    """One ``make(path, metadata)`` call of Keras' saving walk and the values stored."""

    path: str
    metadata: dict[str, Any] | None
    values: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ModelSnapshot:
    """Everything a checkpoint file holds, detached from the live model."""

    entries: list[Entry]
    config_json: str | None = None  # None: weights only
    metadata_json: str = "{}"
    assets: dict[str, bytes] = field(default_factory=dict)  # zip member name -> bytes
    #: Written into the file (``metadata.json`` key, or root attribute of the HDF5 file)
    #: under :data:`TAG_KEY`, so a reader knows the epoch without the manifest.
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for e in self.entries for v in e.values.values())


def snapshot_supported() -> bool:
    """Whether the installed Keras has the saving walk the snapshot uses."""
    return _saving_lib is not None and all(
        hasattr(_saving_lib, name)
        for name in ("_save_state", "_serialize_model_as_json", "DiskIOStore", "NpzIOStore")
    )


def keras_archive_names() -> dict[str, str] | None:
    """The member names Keras reads in a ``.keras`` zip, or None if this Keras has none."""
    names = {
        "weights": getattr(_saving_lib, "_VARS_FNAME_H5", None),
        "config": getattr(_saving_lib, "_CONFIG_FILENAME", None),
        "metadata": getattr(_saving_lib, "_METADATA_FILENAME", None),
    }
    if not all(isinstance(name, str) for name in names.values()):
        return None
    return names  # type: ignore[return-value]


def _caller_saveable() -> Any:
    """The object Keras' ``_save_state`` is saving (its local ``saveable``), or None."""
    frame = sys._getframe(2)
    return frame.f_locals.get("saveable") if frame.f_code.co_name == "_save_state" else None


if _saving_lib is not None:

    class _Recorder(_saving_lib.NpzIOStore):
        """A weights store that keeps what the walk stores, and who stored it."""

        def __init__(self) -> None:  # no file: nothing of NpzIOStore's own state is used
            self.calls: list[tuple[str, dict[str, Any] | None, Any, dict[str, Any]]] = []

        def make(self, path: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
            store: dict[str, Any] = {}
            meta = dict(metadata) if metadata else None
            self.calls.append((path, meta, _caller_saveable(), store))
            return store

        def close(self) -> None:
            pass

    class _AssetRecorder(_saving_lib.DiskIOStore):
        """An asset store in a temporary folder that also notes who asked for a folder."""

        def __init__(self, root: str) -> None:
            self.mode = "w"
            self.archive = None
            self.root_path = "assets"
            self.tmp_dir = root
            self.working_dir = str(Path(root) / "assets")
            Path(self.working_dir).mkdir(parents=True, exist_ok=True)
            self.calls: list[tuple[str, Any]] = []

        def make(self, path: str) -> str:
            self.calls.append((path, _caller_saveable()))
            return str(super().make(path))


def _own_variables(owner: Any) -> dict[str, Any]:
    """What ``owner.save_own_variables`` stores, reading variables without a copy.

    Keras' optimizer stores ``variable.numpy()`` (a fresh copy each); its variables
    are taken directly instead, with the same keys.
    """
    store: dict[str, Any] = {}
    if _BaseOptimizer is not None and (
        type(owner).save_own_variables is _BaseOptimizer.save_own_variables
    ):
        for i, variable in enumerate(owner.variables):
            store[str(i)] = variable
        return store
    owner.save_own_variables(store)
    return store


def _read(value: Any) -> np.ndarray:
    """A numpy view (or array) of ``value``'s current contents; may share its memory.

    A Keras variable is read through DLPack, without a copy (the caller copies once);
    where DLPack is not available (a device tensor), ``.numpy()`` copies.
    """
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    inner = getattr(value, "value", value)  # a Keras variable's backend variable
    if hasattr(inner, "read_value"):
        inner = inner.read_value()
    try:
        return np.from_dlpack(inner)
    except (AttributeError, TypeError, ValueError, RuntimeError, BufferError):
        return np.asarray(inner.numpy() if hasattr(inner, "numpy") else inner)


def _read_assets(folder: Path) -> dict[str, bytes]:
    assets = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            assets[f"assets/{path.relative_to(folder).as_posix()}"] = path.read_bytes()
    return assets


@dataclass
class _Plan:
    signature: tuple[Any, ...]
    weights: list[tuple[str, dict[str, Any] | None, Any]]
    assets: list[tuple[str, Any]]


class Snapshotter:
    """Takes snapshots of a model; replays Keras' walk and reuses buffers after the first.

    ``take`` runs on the training thread; ``recycle`` (from any thread) hands back the
    arrays of a snapshot that is written, for the next ``take`` to copy into.
    """

    def __init__(self) -> None:
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._pool: dict[tuple[str, str, tuple[int, ...], str], list[np.ndarray]] = (
            defaultdict(list)
        )
        self._pool_lock = threading.Lock()

    @staticmethod
    def _signature(model: Any, full: bool, include_optimizer: bool) -> tuple[Any, ...]:
        optimizer = getattr(model, "optimizer", None)
        return (
            id(model), len(model.variables), id(optimizer),
            len(optimizer.variables) if optimizer is not None else 0,
            full, include_optimizer,
        )

    def _walk(self, model: Any, full: bool, include_optimizer: bool) -> _Plan:
        """Run Keras' saving walk once, noting each (path, saveable) it stores."""
        recorder = _Recorder()
        optimizer = getattr(model, "optimizer", None)
        skip = {id(optimizer)} if optimizer is not None and not include_optimizer else set()
        root = tempfile.mkdtemp(prefix="cvml-ckpt-assets-")
        try:
            assets = _AssetRecorder(root) if full else None
            _saving_lib._save_state(
                model, weights_store=recorder, assets_store=assets, inner_path="",
                visited_saveables=skip,
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
        weights = [(path, meta, owner) for path, meta, owner, _ in recorder.calls]
        asset_calls = list(assets.calls) if assets is not None else []
        return _Plan(self._signature(model, full, include_optimizer), weights, asset_calls)

    def _copy(self, path: str, key: str, value: Any) -> np.ndarray:
        source = _read(value)
        slot = (path, key, source.shape, source.dtype.name)
        with self._pool_lock:
            spare = self._pool[slot].pop() if self._pool.get(slot) else None
        if spare is None:
            return np.array(source, copy=True)
        np.copyto(spare, source)
        return spare

    def take(self, model: Any, full: bool = True, include_optimizer: bool = True) -> ModelSnapshot:
        """Copy the model's state (and for ``full``, its config and assets) on this thread.

        Must run between training steps (e.g. in ``on_epoch_end``), where no update
        is in flight, so the copy is of one consistent step.
        """
        if not snapshot_supported():
            raise RuntimeError("this Keras has no saving walk to snapshot with; use model.save")
        signature = self._signature(model, full, include_optimizer)
        plan = self._plans.get(signature)
        if plan is None:
            plan = self._walk(model, full, include_optimizer)
            unknown = [path for path, _, owner in plan.weights if owner is None] + [
                path for path, owner in plan.assets if owner is None
            ]
            if unknown:
                raise SnapshotError(
                    f"Keras' saving walk did not show which object stores {unknown[0]!r} "
                    "(keras.src.saving.saving_lib._save_state no longer has the local "
                    "'saveable' the snapshot reads)"
                )
            self._plans = {signature: plan}
        entries = []
        for path, meta, owner in plan.weights:
            stored = _own_variables(owner)
            values = {key: self._copy(path, key, value) for key, value in stored.items()}
            entries.append(Entry(path, meta, values))
        snapshot = ModelSnapshot(entries)
        if full:
            snapshot.config_json, snapshot.metadata_json = _saving_lib._serialize_model_as_json(
                model
            )
            if plan.assets and any(hasattr(owner, "save_assets") for _, owner in plan.assets):
                root = Path(tempfile.mkdtemp(prefix="cvml-ckpt-assets-"))
                try:
                    for path, owner in plan.assets:
                        folder = root / path if path else root
                        folder.mkdir(parents=True, exist_ok=True)
                        if hasattr(owner, "save_assets"):
                            owner.save_assets(str(folder))
                    snapshot.assets = _read_assets(root)
                finally:
                    shutil.rmtree(root, ignore_errors=True)
        return snapshot

    def recycle(self, snapshot: ModelSnapshot) -> None:
        """Keep ``snapshot``'s arrays (no longer needed) for the next :meth:`take`."""
        with self._pool_lock:
            for entry in snapshot.entries:
                for key, array in entry.values.items():
                    slot = (entry.path, key, array.shape, array.dtype.name)
                    if len(self._pool[slot]) < 2:
                        self._pool[slot].append(array)
            snapshot.entries = []

    def clear(self) -> None:
        """Forget the walk and the reusable buffers (frees their memory)."""
        with self._pool_lock:
            self._pool.clear()
        self._plans = {}


def take_snapshot(model: Any, full: bool = True, include_optimizer: bool = True) -> ModelSnapshot:
    """A one-off snapshot (no walk replay, no buffer reuse)."""
    return Snapshotter().take(model, full, include_optimizer)


__all__ = [
    "TAG_KEY", "Entry", "ModelSnapshot", "SnapshotError", "Snapshotter", "keras_archive_names",
    "snapshot_supported", "take_snapshot",
]
