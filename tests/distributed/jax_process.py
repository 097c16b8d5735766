"""One process of the 2-process JAX test: ``python jax_process.py <id> <port> <log_dir>``.

Trains with ``keras.distribution.DataParallel`` across the processes (one CPU device
each, coordinator on 127.0.0.1), with ckpt, tb (images on) and tflite, and prints one
JSON line: whether each callback counts itself the chief, what it announced, and the
basis decisions after every epoch.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

process_id, port, log_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
keras.distribution.initialize(
    job_addresses=f"127.0.0.1:{port}", num_processes=2, process_id=process_id
)
import jax  # noqa: E402
import numpy as np  # noqa: E402
from cvml_ckpt import CkptCallback  # noqa: E402
from cvml_tb import TensorboardCallback  # noqa: E402
from cvml_tflite import TFLiteCallback  # noqa: E402

import cvml_core  # noqa: E402

keras.distribution.set_distribution(
    keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
)


class Announced:
    def __init__(self):
        self.seen = []

    @cvml_core.hookimpl
    def cvml_artifact_saved(self, artifact):
        self.seen.append(f"{artifact.callback}:{os.path.basename(artifact.path)}")


announced = Announced()
cvml_core.plugins.get_registry().pm.register(announced)


class Decisions(keras.callbacks.Callback):
    """The basis state of every cvml callback after each epoch."""

    def __init__(self, callbacks):
        super().__init__()
        self.callbacks, self.epochs = callbacks, []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({cb.name: cb.policy.state_dict()["best"] for cb in self.callbacks})


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
basis = {"val_loss": "min", "val_accuracy": "max"}
cvml = [
    CkptCallback(log_dir, basis, save_last=True, keep_top_k=2),
    TensorboardCallback(log_dir, basis, image_shape=(8, 8, 1), sample_data=(x[:8], y[:8])),
    TFLiteCallback(log_dir, basis, sample_data=x[:16]),
]
decisions = Decisions(cvml)
# Each process feeds its own half (auto_shard_dataset=False): one global batch of 16.
model.fit(x[process_id::2], y[process_id::2],
          validation_data=(x[:32][process_id::2], y[:32][process_id::2]),
          epochs=4, batch_size=8, verbose=0, callbacks=[*cvml, decisions])
print(json.dumps({
    "process": jax.process_index(),
    "chief": {cb.name: cb.chief for cb in cvml},
    "announced": announced.seen,
    "decisions": decisions.epochs,
}), flush=True)
