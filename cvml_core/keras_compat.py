"""The one place that chooses the Keras package.

Keras 3 (``import keras``) by default; the legacy Keras 2 package ``tf_keras``
when ``TF_USE_LEGACY_KERAS=1``, as TensorFlow itself does. Plugins get Keras from
here (``from cvml_core.keras_compat import keras``) so that switching touches no
plugin.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any


def uses_legacy_keras() -> bool:
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


def _resolve() -> ModuleType:
    return importlib.import_module("tf_keras" if uses_legacy_keras() else "keras")


keras = _resolve()
Callback = keras.callbacks.Callback


def flatten(structure: Any) -> list[Any]:
    """The leaves of a nested structure of outputs (``keras.tree`` has no tf_keras twin)."""
    tree = getattr(keras, "tree", None)
    if tree is not None:
        return list(tree.flatten(structure))
    import tensorflow as tf

    return list(tf.nest.flatten(structure))


def optimizer_built(optimizer: Any) -> bool:
    """Whether ``optimizer`` holds its per-variable state yet.

    Keras 3 says so (``built``); a tf_keras optimizer has only ``iterations`` (and
    maybe its learning rate) until it is built."""
    built = getattr(optimizer, "built", None)
    if built is not None:
        return bool(built)
    return len(optimizer.variables) > 2
