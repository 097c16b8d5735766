"""What each process of the multi-process tests runs: the data, the model, the three
cvml callbacks, and the report it prints (imported by ``jax_process.py`` and
``tf_keras_worker.py``, which set up the distribution first)."""

import json
import os

import numpy as np

import cvml_core
from cvml_core.keras_compat import keras

BASIS = {"val_loss": "min", "val_accuracy": "max"}


class Announced:
    """Every artifact announced to plugins in this process."""

    def __init__(self):
        self.seen = []

    @cvml_core.hookimpl
    def cvml_artifact_saved(self, artifact):
        self.seen.append(f"{artifact.callback}:{os.path.basename(artifact.path)}")


class Decisions(keras.callbacks.Callback):
    """The basis state of every cvml callback after each epoch."""

    def __init__(self, callbacks):
        super().__init__()
        self.callbacks, self.epochs = callbacks, []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({cb.name: cb.policy.state_dict()["best"] for cb in self.callbacks})


def data():
    """64 random 8x8 images; the class is which half is brighter."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = (x.reshape(64, -1)[:, :32].sum(1) > x.reshape(64, -1)[:, 32:].sum(1)).astype("int32")
    return x, y


def model():
    net = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    net.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return net


def fit(net, log_dir, x, y, train, dev):
    """Fit ``net`` on ``train``/``dev`` with ckpt, tb (images on) and tflite; print the
    report line: chief flags, announced artifacts, decisions after every epoch."""
    from cvml_ckpt import CkptCallback
    from cvml_tb import TensorboardCallback
    from cvml_tflite import TFLiteCallback

    announced = Announced()
    cvml_core.plugin_host.loader.get_registry().pm.register(announced)
    cvml = [
        CkptCallback(log_dir, BASIS, save_last=True, keep_top_k=2),
        TensorboardCallback(log_dir, BASIS, image_shape=(8, 8, 1), sample_data=(x[:8], y[:8])),
        TFLiteCallback(log_dir, BASIS, sample_data=x[:16]),
    ]
    start = {cb.name: cb.policy.state_dict()["best"] for cb in cvml if cb.name != "tb"}
    decisions = Decisions(cvml)
    # (x, y) arrays, batched here, or a dataset that is already batched
    inputs = train if isinstance(train, tuple) else (train,)
    batch = {"batch_size": 8} if isinstance(train, tuple) else {}
    net.fit(*inputs, validation_data=dev, epochs=4, verbose=0,
            callbacks=[*cvml, decisions], **batch)
    return {
        "chief": {cb.name: cb.chief for cb in cvml},
        "announced": announced.seen,
        "decisions": decisions.epochs,
        "start": start,  # the bests read from log_dir before training
    }


def report(process, result):
    print(json.dumps({"process": process, **result}), flush=True)
