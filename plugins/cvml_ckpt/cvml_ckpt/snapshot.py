"""A consistent, detached copy of what ``model.save`` would write, taken on the training thread.

:func:`take_snapshot` walks the model with Keras' own saving walk (the code behind
``model.save`` and ``model.save_weights``), recording every variable a layer or the
optimizer hands to its store as a numpy copy, plus the model config and assets for a
``.keras`` file. The copy costs one memcpy of the weights (and optimizer state); the
file is then written by :mod:`cvml_ckpt.writer` on the background worker without
touching the live model, which keeps training while the file is written.

The walk uses Keras 3 internals (``keras.src.saving.saving_lib``), isolated in this
module. :func:`snapshot_supported` says whether they are present; when they are not
(another Keras, ``tf_keras``), :class:`~cvml_ckpt.callback.CkptCallback` saves with the
public ``model.save`` on the training thread instead.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:  # Keras 3 internals; see snapshot_supported()
    from keras.src.saving import saving_lib as _saving_lib
except ImportError:  # pragma: no cover - depends on the installed Keras
    _saving_lib = None


TAG_KEY = "cvml_ckpt"


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


def _baseline_refs() -> int:
    """References a fresh array has when only a store dict holds it (see _detach)."""
    store = {"0": np.zeros(1)}
    return _refs_of(store, "0")


def _refs_of(store: dict[str, Any], key: str) -> int:
    return sys.getrefcount(store[key])


def _detach(store: dict[str, Any], key: str) -> np.ndarray:
    """The value of ``store[key]`` as an array nothing else refers to.

    Variables and tensors are read with ``.numpy()``, which returns a copy under the
    TensorFlow backend. The optimizer hands over ``variable.numpy()`` copies itself;
    such an array, referred to by the store only, is kept as is. Any other array may be
    a live buffer of its layer and is copied.
    """
    value = store[key]
    if isinstance(value, np.ndarray):
        if value.base is None and _refs_of(store, key) <= _BASELINE_REFS + 1:
            return value
        return np.array(value, copy=True)
    if hasattr(value, "numpy"):
        array = np.asarray(value.numpy())
        return array if array.base is None else np.array(array, copy=True)
    return np.array(value, copy=True)


_BASELINE_REFS = _baseline_refs()

if _saving_lib is not None:

    class _Recorder(_saving_lib.NpzIOStore):
        """A weights store that keeps what the walk stores, in order, without writing."""

        def __init__(self) -> None:  # no file: nothing of NpzIOStore's own state is used
            self.entries: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = []

        def make(self, path: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
            store: dict[str, Any] = {}
            self.entries.append((path, dict(metadata) if metadata else None, store))
            return store

        def close(self) -> None:
            pass


def snapshot_supported() -> bool:
    """Whether the installed Keras has the saving walk :func:`take_snapshot` uses."""
    return _saving_lib is not None and all(
        hasattr(_saving_lib, name)
        for name in ("_save_state", "_serialize_model_as_json", "DiskIOStore", "NpzIOStore")
    )


def _read_assets(folder: Path) -> dict[str, bytes]:
    assets = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            assets[f"assets/{path.relative_to(folder).as_posix()}"] = path.read_bytes()
    return assets


def take_snapshot(model: Any, full: bool = True, include_optimizer: bool = True) -> ModelSnapshot:
    """Copy the model's state (and for ``full``, its config and assets) on this thread.

    Must run on the training thread between steps (e.g. in ``on_epoch_end``), where
    no update is in flight, so the copy is of one consistent step.
    """
    if not snapshot_supported():
        raise RuntimeError("this Keras has no saving walk to snapshot with; use model.save")
    recorder = _Recorder()
    optimizer = getattr(model, "optimizer", None)
    skip = {id(optimizer)} if optimizer is not None and not include_optimizer else set()
    assets_store = _saving_lib.DiskIOStore("assets", mode="w") if full else None
    try:
        _saving_lib._save_state(
            model, weights_store=recorder, assets_store=assets_store, inner_path="",
            visited_saveables=skip,
        )
        assets = _read_assets(Path(assets_store.working_dir)) if assets_store else {}
    finally:
        if assets_store is not None and assets_store.tmp_dir:
            shutil.rmtree(assets_store.tmp_dir, ignore_errors=True)
    entries = []
    for path, metadata, store in recorder.entries:
        values = {key: _detach(store, key) for key in list(store)}
        store.clear()
        entries.append(Entry(path, metadata, values))
    snapshot = ModelSnapshot(entries, assets=assets)
    if full:
        snapshot.config_json, snapshot.metadata_json = _saving_lib._serialize_model_as_json(model)
    return snapshot


__all__ = ["TAG_KEY", "Entry", "ModelSnapshot", "snapshot_supported", "take_snapshot"]
