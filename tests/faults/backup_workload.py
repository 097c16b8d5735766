"""The model, data and fit of the backup kill trials (child and test alike)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cvml_core.keras_compat import keras

BASIS = {"val_loss": "min"}
EPOCHS = 4
BATCH = 8
SAMPLES = 64
STEPS = EPOCHS * SAMPLES // BATCH  # training steps of a whole run
INTERVAL = 3  # backup_every_steps


def build() -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(0.25, seed=1),  # a seed generator whose state a backup keeps
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, 8)).astype("float32")
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype("int32")
    return x, y


#: How the trials train: a plain ``model.fit`` on arrays; ``TrainInfer`` on arrays;
#: ``TrainInfer`` on a ``tf.data`` pipeline whose shuffle has a seed and the same order
#: each epoch (reshuffled each iteration, a resumed epoch's order would depend on how
#: many iterators Keras made before it: 2 an epoch with Keras 3.15 on TensorFlow).
RUNNERS = ("fit", "train_infer", "train_infer_tfdata")


def fit(
    model: Any, xy: tuple[np.ndarray, np.ndarray], epochs: int, callbacks: list[Any],
    shuffle: bool = True, runner: str = "fit",
) -> Any:
    """Train on ``xy`` (also the validation data), as ``runner`` says. Keras shuffles
    arrays each epoch; on TensorFlow the order of an epoch does not depend on where the
    fit started, on JAX and torch it does (numpy's generator): ``shuffle=False`` there."""
    x, y = xy
    if runner.startswith("train_infer"):
        from cvml_core import TrainInfer

        train: Any = xy
        if runner.endswith("tfdata"):
            import tensorflow as tf

            train = tf.data.Dataset.from_tensor_slices(xy).shuffle(
                SAMPLES, seed=0, reshuffle_each_iteration=False)
        return TrainInfer(model).train(train, xy, BATCH, epochs, callbacks=callbacks,
                                       show_results=0)
    return model.fit(x, y, validation_data=(x, y), epochs=epochs, batch_size=BATCH,
                     shuffle=shuffle, verbose=0, callbacks=callbacks)
