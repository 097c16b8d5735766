"""One worker of the 2-worker tf_keras test: ``python tf_keras_worker.py <i> <ports> <dir>``.

``TF_USE_LEGACY_KERAS=1`` and ``MultiWorkerMirroredStrategy`` on 127.0.0.1 (``ports``:
two comma-separated free ports), with ckpt, tb (images on) and tflite; prints one JSON line
as ``jax_process.py`` does.
"""

import json
import os
import sys

index, ports, log_dir = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
    "task": {"type": "worker", "index": index},
})

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from cvml_ckpt import CkptCallback  # noqa: E402
from cvml_tb import TensorboardCallback  # noqa: E402
from cvml_tflite import TFLiteCallback  # noqa: E402

import cvml_core  # noqa: E402
from cvml_core.keras_compat import keras  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()


class Announced:
    def __init__(self):
        self.seen = []

    @cvml_core.hookimpl
    def cvml_artifact_saved(self, artifact):
        self.seen.append(f"{artifact.callback}:{os.path.basename(artifact.path)}")


announced = Announced()
cvml_core.plugins.get_registry().pm.register(announced)


class Decisions(keras.callbacks.Callback):
    def __init__(self, callbacks):
        super().__init__()
        self.callbacks, self.epochs = callbacks, []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({cb.name: cb.policy.state_dict()["best"] for cb in self.callbacks})


keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.random((64, 8, 8, 1)).astype("float32")
y = (x.reshape(64, -1)[:, :32].sum(1) > x.reshape(64, -1)[:, 32:].sum(1)).astype("int32")
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
dev = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(16).with_options(options)
with strategy.scope():
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.BatchNormalization(),
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
model.fit(train, validation_data=dev, epochs=4, verbose=0, callbacks=[*cvml, decisions])
print(json.dumps({
    "process": index,
    "chief": {cb.name: cb.chief for cb in cvml},
    "announced": announced.seen,
    "decisions": decisions.epochs,
}), flush=True)
