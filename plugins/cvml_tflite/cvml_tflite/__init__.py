"""cvml-tflite: convert a Keras model to a verified ``.tflite`` file while it trains.

``TFLiteCallback`` snapshots the model on the training thread and converts it in a
worker process (see :mod:`cvml_tflite.process`). Importing this package does not
import TensorFlow; the class is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cvml_tflite.callback import TFLiteCallback, TFLiteConversionError

__all__ = ["QUANTIZATION_MODES", "TFLiteCallback", "TFLiteConversionError", "shutdown_workers"]

QUANTIZATION_MODES = (None, "float16", "dynamic", "int8")

_LAZY = {
    "TFLiteCallback": "cvml_tflite.callback",
    "TFLiteConversionError": "cvml_tflite.callback",
    "shutdown_workers": "cvml_tflite.process",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cvml_tflite' has no attribute {name!r}")
