"""Under MirroredStrategy (two logical CPUs): one copy written, the decisions of one device.

Logical devices must be configured before TensorFlow initialises its devices, so the
strategy runs in one subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from cvml_core.artifacts.manifest import read_manifest
from cvml_core.keras_compat import keras

RUN = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
import numpy as np
from cvml_core.keras_compat import keras
from cvml_ckpt import CkptCallback

def build():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

rng = np.random.default_rng(0)
x = rng.random((64, 8)).astype("float32")
y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype("int32")
basis = {"val_loss": "min", "val_accuracy": "max"}
log_dir = sys.argv[1]

class Drain(keras.callbacks.Callback):
    # Each write ends before the next epoch's: no save supersedes a waiting one, so the
    # decisions do not depend on timing.
    def __init__(self, cb):
        super().__init__()
        self.cb = cb

    def on_epoch_end(self, epoch, logs=None):
        self.cb.wait_for_background()

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = build()
cb = CkptCallback(os.path.join(log_dir, "mirrored"), basis, save_last=True, keep_top_k=2)
history = model.fit(x, y, validation_data=(x[:32], y[:32]), epochs=6, batch_size=16,
                    shuffle=False, verbose=0, callbacks=[cb, Drain(cb)])
weights = [w.tolist() for w in model.get_weights()]

# The same logs on one device: the decisions must match.
single = build()
cb1 = CkptCallback(os.path.join(log_dir, "single"), basis, save_last=True, keep_top_k=2)
cb1.set_model(single)
cb1.on_train_begin({})
logs = [dict(zip(history.history, v)) for v in zip(*history.history.values())]
for epoch, epoch_logs in enumerate(logs):
    cb1.on_epoch_end(epoch, epoch_logs)
    cb1.wait_for_background()
cb1.on_train_end(logs[-1])
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "weights": weights}))
"""


def decisions(folder):
    manifest = read_manifest(folder)
    return [
        (a["epoch"], a["basis_key"], a["details"]["role"], os.path.basename(a["path"]))
        for a in manifest["artifacts"]
    ], manifest["basis"]["best"]


def test_mirrored_strategy_writes_one_copy_with_single_device_decisions(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2

    mirrored, single = tmp_path / "mirrored" / "ckpt", tmp_path / "single" / "ckpt"
    assert decisions(mirrored) == decisions(single)
    saved, _ = decisions(mirrored)
    assert len(saved) == len(set(saved))  # no file written twice for one epoch
    assert sorted(p.name for p in mirrored.iterdir()) == sorted(p.name for p in single.iterdir())
    assert not [p for p in mirrored.iterdir() if p.name.startswith(".tmp-")]

    last = keras.models.load_model(mirrored / "last.keras")
    for got, want in zip(last.get_weights(), result["weights"], strict=True):
        np.testing.assert_array_equal(got, np.asarray(want, dtype=got.dtype))
