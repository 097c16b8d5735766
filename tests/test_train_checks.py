"""TrainInfer checks the first batch of each data set against the model before epoch 1."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cvml_core.keras_compat import keras
from cvml_core.train.data_checks import loss_name
from cvml_core.train.train_infer import TrainInfer


@pytest.fixture
def probe(run_hooks):
    return run_hooks


class EpochCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0  # begun
        self.done = 0  # finished

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1


def model(features=8, classes=10, loss="sparse_categorical_crossentropy"):
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(classes, activation="softmax")]
    )
    m.compile(optimizer="adam", loss=loss)
    return m


def data(n=48, features=8, classes=10, one_hot=False, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, features)).astype("float32")
    y = rng.integers(0, classes, n).astype("int32")
    if one_hot:
        y = np.eye(classes, dtype="float32")[y]
    return x, y


def ds(arrays, batch=16):
    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch)


def refused(m, train, dev, probe, tmp_path, batch_size=16):
    """Train expecting a ValueError before the first batch; the error's text."""
    counter = EpochCounter()
    with pytest.raises(ValueError) as info:
        TrainInfer(m).train(
            train, dev, batch_size, 2, callbacks=[counter, {"name": "ckpt", "log_dir": tmp_path,
                                                            "basis_dict": {"loss": "min"}}],
            show_results=0,
        )
    assert counter.batches == 0
    assert probe.begin == []
    assert not (tmp_path / "ckpt").exists()  # refused before any callback was built
    return str(info.value)


# -- inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dataset", "arrays"])
def test_train_input_width_is_refused(kind, probe, tmp_path):
    train = data(features=6)
    if kind == "dataset":
        train = ds(train)
    message = refused(model(), train, data(), probe, tmp_path)
    assert message.startswith("train_dataset: inputs have shape (16, 6)")
    assert "first batch" in message
    assert "expects (batch, 8)" in message
    assert "Received: inputs with shape (16, 6)" in message


@pytest.mark.parametrize("kind", ["dataset", "arrays"])
def test_dev_input_width_is_refused(kind, probe, tmp_path):
    dev = data(n=20, features=5)
    if kind == "dataset":
        dev = ds(dev, 10)
    message = refused(model(), data(), dev, probe, tmp_path, batch_size=10)
    assert message.startswith("dev_dataset: inputs have shape (10, 5)")
    assert "(batch, 8)" in message


# -- labels --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dataset", "arrays"])
def test_one_hot_labels_with_sparse_loss_are_refused(kind, probe, tmp_path):
    dev = data(n=32, one_hot=True)
    if kind == "dataset":
        dev = ds(dev)
    message = refused(model(), data(), dev, probe, tmp_path)
    assert message.startswith("dev_dataset: labels have shape (16, 10)")
    assert "'sparse_categorical_crossentropy' expects integer class ids of shape (batch,)" in (
        message
    )
    assert "one-hot labels need 'categorical_crossentropy'" in message
    assert "Received: labels with shape (16, 10)" in message


def test_sparse_loss_given_as_object_is_recognised(probe, tmp_path):
    m = model(loss=keras.losses.SparseCategoricalCrossentropy(name="mine"))
    message = refused(m, ds(data(one_hot=True)), None, probe, tmp_path)
    assert "train_dataset: labels have shape (16, 10)" in message


@pytest.mark.parametrize("kind", ["dataset", "arrays"])
def test_labels_out_of_range_are_refused(kind, probe, tmp_path):
    x, y = data()
    y[3] = 12
    train = ds((x, y)) if kind == "dataset" else (x, y)
    message = refused(model(), train, None, probe, tmp_path)
    assert message.startswith(
        "train_dataset: labels in its first batch hold class ids from 0 to 12"
    )
    assert "10 output units" in message and "0 <= id < 10" in message


def test_negative_and_fractional_labels_are_refused(probe, tmp_path):
    x, y = data()
    message = refused(model(), (x, np.where(y == y[0], -1, y)), None, probe, tmp_path)
    assert "class ids from -1" in message
    message = refused(model(), (x, y + 0.5), None, probe, tmp_path)
    assert "not a class id" in message and "dtype float64" in message


def test_integer_labels_with_one_hot_loss_are_refused(probe, tmp_path):
    # Keras would broadcast (16, 1) against (16, 10) and train a wrong model silently.
    message = refused(model(loss="categorical_crossentropy"), ds(data()), None, probe, tmp_path)
    assert message.startswith("train_dataset: labels have shape (16,)")
    assert "one-hot labels of shape (batch, 10)" in message
    assert "integer class ids need 'sparse_categorical_crossentropy'" in message


def test_good_data_of_every_kind_trains():
    counter = EpochCounter()
    x, y = data()
    # a new model per kind of data: Keras 3 does not retrace one model for another input kind
    TrainInfer(model()).train(
        ds((x, y)), ds(data(n=32, seed=1)), None, 1, callbacks=[counter], show_results=0
    )
    TrainInfer(model()).train((x, y.reshape(-1, 1)), (x, y), 16, 1, show_results=0)  # (batch, 1)
    TrainInfer(model()).train(tf.data.Dataset.from_tensor_slices((x, y)), None, 16, 1,
                              show_results=0)
    TrainInfer(model()).train((x[..., None], y), None, 16, 1, show_results=0)  # Keras squeezes
    ignore = keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)
    TrainInfer(model(loss=ignore)).train((x, np.where(y == y[0], -1, y)), None, 16, 1,
                                         show_results=0)  # -1 is ignored by the loss
    one_hot = TrainInfer(model(loss=keras.losses.CategoricalCrossentropy()))
    one_hot.train(data(one_hot=True), None, 16, 1, show_results=0)
    assert counter.batches == 3


def test_one_shot_generator_dataset_is_not_read_but_its_spec_is_checked(probe, tmp_path):
    x, y = data()
    pairs = iter(list(zip(x, y, strict=True)))  # one-shot: can be read only once
    spec = (tf.TensorSpec((8,), tf.float32), tf.TensorSpec((), tf.int32))
    gen = tf.data.Dataset.from_generator(lambda: pairs, output_signature=spec)
    counter = EpochCounter()
    TrainInfer(model()).train(gen, None, 16, 1, callbacks=[counter], show_results=0)
    assert counter.done == 3  # every batch reached training
    probe.begin.clear()
    bad_spec = (tf.TensorSpec((6,), tf.float32), tf.TensorSpec((), tf.int32))
    bad = tf.data.Dataset.from_generator(lambda: iter([]), output_signature=bad_spec)
    message = refused(model(), bad, None, probe, tmp_path)
    assert "train_dataset: inputs have shape (None, 6) in its element_spec" in message


def test_multi_input_model_checks_each_input(probe, tmp_path):
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Concatenate()([a, b]))
    m = keras.Model([a, b], out)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    xa, xb, y = rng.random((32, 4)), rng.random((32, 5)), rng.integers(0, 2, 32)
    message = refused(m, ((xa, xb), y), None, probe, tmp_path)
    assert message.startswith("train_dataset: inputs[1] have shape (16, 5)")
    assert "(batch, 3)" in message


def test_callback_class_instead_of_instance_is_refused(tmp_path):
    with pytest.raises(TypeError) as info:
        TrainInfer(model()).train(
            data(), None, 16, 1,
            callbacks=[EpochCounter(), keras.callbacks.EarlyStopping], show_results=0,
        )
    assert "callbacks[1] is the class EarlyStopping, not an instance: write EarlyStopping(...)" in (
        str(info.value)
    )


@pytest.mark.parametrize(
    "loss, name",
    [
        ("sparse_categorical_crossentropy", "sparse_categorical_crossentropy"),
        ("SparseCategoricalCrossentropy", "sparse_categorical_crossentropy"),
        (keras.losses.CategoricalCrossentropy(name="x"), "categorical_crossentropy"),
        (keras.losses.sparse_categorical_crossentropy, "sparse_categorical_crossentropy"),
        (["categorical_crossentropy"], "categorical_crossentropy"),
        (["mse", "mse"], None),
        (None, None),
    ],
)
def test_loss_name(loss, name):
    assert loss_name(loss) == name
