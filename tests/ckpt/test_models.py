"""Models beyond a Dense stack: every checkpoint loads as ``model.save`` of its epoch does.

Custom registered layers, a ``StringLookup`` vocabulary (an asset), a subclassed model,
mixed precision and a multi-output model: each file is compared with a ``model.save``
of the same model taken at the same epoch end, after loading both with
``keras.models.load_model``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cvml_ckpt import CkptCallback

from cvml_core.artifacts.manifest import read_manifest
from cvml_core.keras_compat import keras


@keras.saving.register_keras_serializable(package="cvml_ckpt_tests")
class Scale(keras.layers.Layer):
    """A custom layer with a trainable weight and a config argument."""

    def __init__(self, init=2.0, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.factor = self.add_weight(
            shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init)
        )

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "init": self.init}


@keras.saving.register_keras_serializable(package="cvml_ckpt_tests")
class TwoLayerNet(keras.Model):
    """A subclassed model with get_config."""

    def __init__(self, units=8, classes=2, **kwargs):
        super().__init__(**kwargs)
        self.units, self.classes = units, classes
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.out = keras.layers.Dense(classes, activation="softmax")

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "classes": self.classes}


class SaveEachEpoch(keras.callbacks.Callback):
    """``model.save`` at each epoch end: the reference each checkpoint must match."""

    def __init__(self, folder):
        super().__init__()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        self.model.save(self.folder / f"epoch{epoch + 1}.keras")


def _data(n=64, features=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, features)).astype("float32")
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype("int32")
    return x, y


def _custom():
    x, y = _data()
    model = keras.Sequential([
        keras.Input((8,)), Scale(name="scale"), keras.layers.Dense(2, activation="softmax"),
    ])
    return model, x, y, "sparse_categorical_crossentropy"


def _lookup():
    words = np.array(["red", "green", "blue", "teal", "red", "blue"] * 8)
    lookup = keras.layers.StringLookup(name="lookup")
    lookup.adapt(words)  # the vocabulary is an asset, not in the config
    inputs = keras.Input((1,), dtype="string")
    ids = lookup(inputs)
    x = keras.layers.Embedding(lookup.vocabulary_size(), 4)(ids)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    y = (np.arange(len(words)) % 2).astype("int32")
    import tensorflow as tf  # string inputs: a TensorFlow tensor

    x = tf.constant(words.reshape(-1, 1))
    return keras.Model(inputs, outputs), x, y, "sparse_categorical_crossentropy"


def _subclassed():
    x, y = _data()
    model = TwoLayerNet()
    model(x[:1])
    return model, x, y, "sparse_categorical_crossentropy"


def _mixed():
    x, y = _data()
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(8, activation="relu", dtype="mixed_float16"),
        keras.layers.Dense(2, activation="softmax", dtype="float32"),
    ])
    return model, x, y, "sparse_categorical_crossentropy"


def _multi_output():
    x, y = _data()
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    cls = keras.layers.Dense(2, activation="softmax", name="cls")(hidden)
    reg = keras.layers.Dense(1, name="reg")(hidden)
    model = keras.Model(inputs, {"cls": cls, "reg": reg})
    targets = {"cls": y, "reg": x.sum(1, keepdims=True)}
    return model, x, targets, {"cls": "sparse_categorical_crossentropy", "reg": "mse"}


@pytest.mark.parametrize(
    "build", [
        _custom,
        pytest.param(_lookup, marks=pytest.mark.skipif(
            keras.backend.backend() != "tensorflow",
            reason="string inputs train on TensorFlow only (Keras fails in fit elsewhere)")),
        _subclassed, _mixed, _multi_output,
    ],
    ids=["custom-layer", "string-lookup", "subclassed", "mixed-precision", "multi-output"],
)
def test_each_checkpoint_loads_like_model_save_of_its_epoch(tmp_path, build):
    keras.utils.set_random_seed(0)
    model, x, y, loss = build()
    model.compile(optimizer="adam", loss=loss)
    reference = SaveEachEpoch(tmp_path / "reference")
    cb = CkptCallback(tmp_path / "run", {"loss": "min"}, keep_top_k=None, save_last=True)
    model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0,
              callbacks=[cb, reference])

    folder = tmp_path / "run" / "ckpt"
    manifest = read_manifest(folder)
    latest = {Path(e["path"]).name: e for e in manifest["artifacts"]}  # what each file holds
    checked = 0
    for name, entry in latest.items():
        path = folder / name
        ours = keras.models.load_model(path)
        theirs = keras.models.load_model(tmp_path / "reference" / f"epoch{entry['epoch']}.keras")
        for a, b in zip(ours.weights, theirs.weights, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(ours.optimizer.variables, theirs.optimizer.variables, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        got, want = ours.predict(x[:8], verbose=0), theirs.predict(x[:8], verbose=0)
        for a, b in zip(keras.tree.flatten(got), keras.tree.flatten(want), strict=True):
            np.testing.assert_array_equal(a, b)
        checked += 1
    assert checked >= 3  # the best, an earlier best and last.keras at least
    if build is _lookup:
        loaded = keras.models.load_model(folder / "last.keras")
        assert loaded.get_layer("lookup").get_vocabulary() == model.get_layer(
            "lookup"
        ).get_vocabulary()
