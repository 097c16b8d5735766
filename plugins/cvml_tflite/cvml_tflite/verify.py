"""Verification of a ``.tflite`` file with the LiteRT interpreter against Keras outputs.

Runs a sample batch through the file (its ``serving_default`` signature) and
compares with the Keras model's outputs in inference mode. Integer inputs and
outputs are quantized and dequantized with the file's own scale and zero point.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np


def _quantize(x: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(details["dtype"])
    scale, zero_point = details["quantization"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    if not scale:
        raise ValueError(f"integer input {details['name']!r} has no quantization scale")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def _output_order(name: str) -> tuple[int, str]:
    match = re.search(r"(\d+)$", name)
    return (int(match.group(1)) if match else 0, name)


def run_tflite(model_bytes: bytes, x: np.ndarray) -> list[np.ndarray]:
    """The file's float outputs for input batch ``x`` (single-input models)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    runner = interpreter.get_signature_runner()
    inputs = runner.get_input_details()
    if len(inputs) != 1:
        raise ValueError(f"verification supports single-input models; got {sorted(inputs)}")
    name, details = next(iter(inputs.items()))
    outputs = runner(**{name: _quantize(np.asarray(x, np.float32), details)})
    out_details = runner.get_output_details()
    return [_dequantize(outputs[k], out_details[k]) for k in sorted(outputs, key=_output_order)]


def compare(
    tflite_outputs: Sequence[np.ndarray], keras_outputs: Sequence[np.ndarray]
) -> dict[str, Any]:
    """``max_abs_error`` over all outputs; ``top1_agreement`` for a classifier output.

    A classifier output is 2-D with more than one column; its argmax is compared
    row by row. ``top1_agreement`` is None when no output is one.
    """
    if len(tflite_outputs) != len(keras_outputs):
        raise ValueError(
            f"the .tflite file has {len(tflite_outputs)} outputs, the Keras model "
            f"{len(keras_outputs)}"
        )
    max_error = 0.0
    agreements = []
    for lite, ref in zip(tflite_outputs, keras_outputs, strict=True):
        ref = np.asarray(ref, np.float32)
        lite = np.asarray(lite, np.float32).reshape(ref.shape)
        max_error = max(max_error, float(np.max(np.abs(lite - ref))) if ref.size else 0.0)
        if ref.ndim == 2 and ref.shape[1] > 1:
            agreements.append(float(np.mean(lite.argmax(1) == ref.argmax(1))))
    return {
        "max_abs_error": max_error,
        "top1_agreement": min(agreements) if agreements else None,
        "samples": int(len(keras_outputs[0])) if keras_outputs else 0,
    }


def flatten(structure: Any) -> list[Any]:
    """The leaves of a nested structure of outputs (``keras.tree`` has no tf_keras twin)."""
    from cvml_core.keras_compat import keras

    tree = getattr(keras, "tree", None)
    if tree is not None:
        return list(tree.flatten(structure))
    import tensorflow as tf

    return list(tf.nest.flatten(structure))


def keras_outputs(model: Any, x: np.ndarray) -> list[np.ndarray]:
    """The Keras model's outputs in inference mode, flattened in output order."""
    out = model.predict(x, batch_size=32, verbose=0)
    return [np.asarray(o) for o in flatten(out)]
