"""The training process the kill trials SIGKILL: ckpt + tflite on a tiny model.

``python kill_child.py LOG_DIR``; prints ``training`` once fit starts (the test reads
the manifests itself).
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from cvml_ckpt import CkptCallback  # noqa: E402
from cvml_tflite import TFLiteCallback  # noqa: E402

from cvml_core.keras_compat import keras  # noqa: E402

log_dir = sys.argv[1]
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((8,)),
    keras.layers.Dense(16, activation="relu"),
    keras.layers.Dense(2, activation="softmax"),
])
model.compile("adam", "sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.random((64, 8)).astype("float32")
y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype("int32")
basis = {"val_loss": "min"}
callbacks = [
    CkptCallback(log_dir, basis, save_last=True, keep_top_k=2),
    TFLiteCallback(log_dir, basis, sample_data=x[:16]),
    keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: time.sleep(0.02)),
]
print("training", flush=True)
model.fit(x, y, validation_data=(x, y), epochs=100000, batch_size=64, verbose=0,
          callbacks=callbacks)
