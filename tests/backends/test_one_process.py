"""The three callbacks in one ``model.fit`` on the backend Keras runs on (KERAS_BACKEND).

CI runs this module on TensorFlow (the core session), JAX (``nox -s jax``) and torch
(``nox -s torch``): checkpoints load and hold the weights of their epoch, TensorBoard
events are written with images, and the ``.tflite`` file, converted by a worker on
the TensorFlow backend, is verified against this backend's own outputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from cvml_core.artifacts.manifest import read_manifest
from cvml_core.keras_compat import keras

pytest.importorskip("cvml_ckpt")
pytest.importorskip("cvml_tb")
pytest.importorskip("cvml_tflite")


class KeepWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = [np.array(w) for w in self.model.get_weights()]


def test_ckpt_tb_and_tflite_in_one_fit(tmp_path):
    from cvml_ckpt import CkptCallback
    from cvml_tb import TensorboardCallback
    from cvml_tflite import TFLiteCallback
    from tensorboard.backend.event_processing import event_accumulator as ea

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = (x.reshape(64, -1)[:, :32].sum(1) > x.reshape(64, -1)[:, 32:].sum(1)).astype("int32")
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    basis = {"val_loss": "min"}
    keep = KeepWeights()
    callbacks = [
        keep,
        CkptCallback(tmp_path, basis, save_last=True),
        TensorboardCallback(tmp_path, basis, image_shape=(8, 8, 1), sample_data=(x[:8], y[:8])),
        TFLiteCallback(tmp_path, basis, sample_data=x[:16]),
    ]
    model.fit(x, y, validation_data=(x[:16], y[:16]), epochs=3, batch_size=16, verbose=0,
              callbacks=callbacks)

    ckpt = read_manifest(tmp_path / "ckpt")
    last = [a for a in ckpt["artifacts"] if a["path"].endswith("last.keras")][-1]
    assert last["epoch"] == 3
    loaded = keras.models.load_model(tmp_path / "ckpt" / "last.keras")
    for got, want in zip(loaded.get_weights(), keep.weights[3], strict=True):
        np.testing.assert_array_equal(got, want)
    fresh = keras.models.clone_model(model)
    fresh.compile("adam", "sparse_categorical_crossentropy")
    assert CkptCallback.restore(fresh, tmp_path) == 3

    validation = ea.EventAccumulator(str(tmp_path / "tb" / "validation"),
                                     size_guidance={ea.TENSORS: 0})
    validation.Reload()
    tags = validation.Tags()["tensors"]
    assert "epoch_loss" in tags and any("image" in t or "samples" in t for t in tags), tags

    tflite = read_manifest(tmp_path / "tflite")
    best = tflite["artifacts"][-1]
    assert best["details"]["verified"], best["details"]
    if keras.backend.backend() != "tensorflow":
        assert "training process" in best["details"]["sample_source"]
