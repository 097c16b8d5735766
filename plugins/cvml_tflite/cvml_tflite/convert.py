"""Conversion of a model snapshot to ``.tflite``: runs inside the worker process.

A snapshot is a folder holding ``model.json`` (``model.to_json()``) and
``weights.npz`` (``model.get_weights()``, in order), taken on the training thread and
written by the callback's background thread.
The model is rebuilt here, exported as a SavedModel (``model.export(...,
format="tf_saved_model")``, the path Keras' own LiteRT export takes) and converted
with ``tf.lite.TFLiteConverter.from_saved_model``. Only TFLite builtin ops are
allowed, so an unsupported op fails here with the converter's own message, and the
file runs on the plain LiteRT interpreter.
"""

from __future__ import annotations

import importlib
import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SNAPSHOT_CONFIG = "model.json"
SNAPSHOT_WEIGHTS = "weights.npz"
SNAPSHOT_REFERENCE = "reference.npz"  # x, source, y0..yN: outputs of the live model


def load_snapshot(folder: str | Path, imports: Sequence[str] = ()) -> Any:
    """Rebuild the Keras model saved by the callback in ``folder``.

    ``imports`` are modules to import first, so that custom layers they define
    register themselves with Keras.
    """
    from cvml_core.keras_compat import keras

    for module in imports:
        importlib.import_module(module)
    folder = Path(folder)
    text = (folder / SNAPSHOT_CONFIG).read_text(encoding="utf-8")
    config = json.loads(text)
    if hasattr(keras, "config"):  # Keras 3; tf_keras has no such switch
        # The snapshot is written by this process' parent: Lambda layers may be trusted.
        keras.config.enable_unsafe_deserialization()
    model = keras.models.model_from_json(text)
    _raise_build_error(model, config)
    with np.load(folder / SNAPSHOT_WEIGHTS) as weights:
        model.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])
    return model


def _raise_build_error(model: Any, config: dict[str, Any]) -> None:
    """Surface why a model was not rebuilt, instead of Keras' "no defined inputs".

    ``Sequential`` swallows a layer's failure while rebuilding (e.g. a ``Lambda``
    whose function uses a global name); calling the model shows the real error.
    """
    try:
        model.inputs  # noqa: B018
    except Exception:
        shape = config.get("config", {}).get("build_input_shape")
        if shape:
            model(np.zeros([dim or 1 for dim in shape], "float32"))
        raise


def _representative(x: np.ndarray) -> Iterator[list[np.ndarray]]:
    for i in range(len(x)):
        yield [x[i : i + 1]]


def convert(
    model: Any, quantization: str | None, sample: np.ndarray | None, scratch: str | None = None
) -> bytes:
    """Return the ``.tflite`` bytes of ``model`` in the given quantization mode.

    ``sample`` calibrates ``int8`` (full-integer: int8 inputs and outputs).
    Converter failures propagate as the converter raised them.
    """
    import tensorflow as tf

    from cvml_core.keras_compat import uses_legacy_keras

    # ``scratch``: the snapshot's folder (under the callback's ``.tmp-`` scratch folder),
    # so that a worker killed mid-export leaves nothing the next run does not remove.
    with tempfile.TemporaryDirectory(prefix="cvml-tflite-sm-", dir=scratch) as saved_model:
        if uses_legacy_keras():  # tf_keras exports a SavedModel, with no options
            model.export(saved_model)
        else:
            model.export(saved_model, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantization == "int8":
            if sample is None:
                raise ValueError("int8 quantization needs sample data to calibrate on")
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: _representative(sample)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()
