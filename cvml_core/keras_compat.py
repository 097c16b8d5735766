"""The one place that chooses the Keras package: Keras 3 by default, the legacy
``tf_keras`` when ``TF_USE_LEGACY_KERAS=1`` (as TensorFlow does). Plugins get Keras from
here (``from cvml_core.keras_compat import keras``), so switching touches no plugin."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def uses_legacy_keras() -> bool:
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


keras: ModuleType = importlib.import_module("tf_keras" if uses_legacy_keras() else "keras")
Callback = keras.callbacks.Callback
