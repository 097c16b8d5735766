"""cvml callbacks: Keras training callbacks as pip-installable plugins.

Find and build callbacks by name (no TensorFlow import to list them)::

    import cvml_core
    cvml_core.available_callbacks()
    cb = cvml_core.create_callback("ckpt", log_dir="runs/x", basis_dict={"val_loss": "min"})

Add a callback: a package whose entry point names it (written once) and its class::

    # pyproject.toml
    [project.entry-points."cvml.callbacks"]
    my-cb = "my_package:MyCallback"

``my_package.MyCallback`` subclasses :class:`cvml_core.BasisCallback` (or plain
``keras.callbacks.Callback``); created by name or built directly, it is called
``my-cb``. ``help(cvml_core.BasisCallback)`` and docs/plugin-authors.md are the
reference of what a subclass may use and override. A plugin with hooks is a module
named by an entry point in group ``cvml`` (:mod:`cvml_core.plugin_host.hookspecs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cvml_core.artifacts.artifact import Artifact, Staged
from cvml_core.artifacts.atomic import atomic_path, atomic_write_bytes, atomic_write_text, staging
from cvml_core.artifacts.ledger import SaveJob
from cvml_core.artifacts.manifest import Manifest
from cvml_core.artifacts.storage import Store, open_store
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
    from cvml_core.artifacts.callback import BasisCallback, LogDirError
    from cvml_core.train.train_infer import TrainInfer

# Names whose modules import Keras/TensorFlow: loaded on first use only.
_LAZY = {
    "BasisCallback": "cvml_core.artifacts.callback",
    "LogDirError": "cvml_core.artifacts.callback",
    "TrainInfer": "cvml_core.train.train_infer",
}

__all__ = [
    "Artifact",
    "BackgroundJobError",
    "BackgroundWorker",
    "BasisCallback",
    "BasisPolicy",
    "CallbackInfo",
    "LogDirError",
    "Manifest",
    "MissingMetricError",
    "PluginError",
    "RunInfo",
    "SaveJob",
    "Staged",
    "Store",
    "TrainInfer",
    "UnknownCallbackError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "available_callbacks",
    "create_callback",
    "hookimpl",
    "open_store",
    "staging",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cvml_core' has no attribute {name!r}")
