"""cvml callbacks: Keras training callbacks as pip-installable plugins, listed by
``available_callbacks()`` (no TensorFlow import) and built by ``create_callback(name, ...)``
(adding one: docs/plugin-authors.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cvml_core.artifacts.artifact import Artifact, Staged
from cvml_core.artifacts.atomic import atomic_path, atomic_write_bytes, atomic_write_text, staging
from cvml_core.artifacts.ledger import SaveJob
from cvml_core.artifacts.manifest import Manifest
from cvml_core.artifacts.storage import LogDirError, Store, open_store
from cvml_core.artifacts.worker import BackgroundJobError, BackgroundWorker
from cvml_core.plugin_host.hookspecs import hookimpl
from cvml_core.plugin_host.loader import (
    CallbackInfo,
    PluginError,
    UnknownCallbackError,
    available_callbacks,
    create_callback,
)
from cvml_core.plugin_host.run_info import RunInfo
from cvml_core.policy.basis import BasisPolicy, MissingMetricError

if TYPE_CHECKING:
    from cvml_core.artifacts.callback import BasisCallback
    from cvml_core.train.train_infer import TrainInfer

# Names whose modules import Keras/TensorFlow: loaded on first use only.
_LAZY = {
    "BasisCallback": "cvml_core.artifacts.callback",
    "TrainInfer": "cvml_core.train.train_infer",
}

__all__ = [
    "Artifact", "BackgroundJobError", "BackgroundWorker", "BasisCallback", "BasisPolicy",
    "CallbackInfo", "LogDirError", "Manifest", "MissingMetricError", "PluginError",
    "RunInfo", "SaveJob", "Staged", "Store", "TrainInfer", "UnknownCallbackError",
    "atomic_path", "atomic_write_bytes", "atomic_write_text", "available_callbacks",
    "create_callback", "hookimpl", "open_store", "staging",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cvml_core' has no attribute {name!r}")
