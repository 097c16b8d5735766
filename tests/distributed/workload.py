"""What each process of the multi-process tests runs: the data, the model, the three
cvml callbacks, and the report it prints (imported by ``jax_process.py`` and
``tf_keras_worker.py``, which set up the distribution first)."""

import contextlib
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
        "iterations": iterations(net),
        "chief": {cb.name: cb.chief for cb in cvml},
        "announced": announced.seen,
        "decisions": decisions.epochs,
        "start": start,  # the bests read from log_dir before training
    }


def iterations(net):
    """The optimizer's iteration count (Keras 3 and tf_keras)."""
    if hasattr(keras, "ops"):  # Keras 3
        return int(keras.ops.convert_to_numpy(net.optimizer.iterations))
    return int(keras.backend.get_value(net.optimizer.iterations))


class Crash(keras.callbacks.Callback):
    """Raises after batch ``batch`` (1-based) of epoch ``epoch`` (0-based): a preemption."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch + 1) == self.at:
            raise RuntimeError(f"crash after batch {batch + 1} of epoch {self.epoch}")


class Position(keras.callbacks.Callback):
    """The first epoch a fit begins and the optimizer's iteration count then."""

    def __init__(self):
        super().__init__()
        self.first = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.first is None:
            self.first = [epoch, iterations(self.model)]


def crash_and_resume(log_dir, train, barrier, scope=contextlib.nullcontext):
    """A run that backs up every 2 steps crashes (raises) after batch 2 of epoch 3 in
    every process; after ``barrier()`` (the chief's backup written) a new model and
    callback resume it (models made in ``scope()``). Returns where the resumed fit
    started and its final iteration count."""
    from cvml_ckpt import CkptCallback

    folder = os.path.join(log_dir, "backup_run")
    first = CkptCallback(folder, {"loss": "min"}, backup_every_steps=2)
    keras.utils.set_random_seed(1)  # the same initial values in every process
    with scope():
        crashed = model()
    try:
        crashed.fit(*train, epochs=4, batch_size=8, verbose=0,
                    callbacks=[first, Crash(2, 2)])
        raise AssertionError("the run did not crash")
    except RuntimeError as error:
        if "crash after" not in str(error):
            raise
    first.wait_for_background(raise_error=False)
    barrier()
    keras.utils.set_random_seed(2)
    again = CkptCallback(folder, {"loss": "min"}, backup_every_steps=2)
    with scope():
        position, net = Position(), model()
    net.fit(*train, epochs=4, batch_size=8, verbose=0, callbacks=[again, position])
    return {
        "resumed_from": list(again.resumed_from or []),
        "first_epoch": position.first,
        "resumed_iterations": iterations(net),
    }


def report(process, result):
    print(json.dumps({"process": process, **result}), flush=True)
