"""SIGKILL during a background write: every file under a final name loads, the best is intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from cvml_ckpt import CkptCallback

from cvml_core.artifacts.manifest import HISTORY_NAME, MANIFEST_NAME, read_manifest
from cvml_core.keras_compat import keras

# About 50 MB per checkpoint (weights and Adam state), tiny data: the writer is always busy.
TRAIN = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
from cvml_core.keras_compat import keras
from cvml_ckpt import CkptCallback

keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((64,)),
    keras.layers.Dense(2048, activation="relu"),
    keras.layers.Dense(2048, activation="relu"),
    keras.layers.Dense(2),
])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(0).random((32, 64)).astype("float32")
y = (x.sum(1) > 32).astype("int32")
cb = CkptCallback(sys.argv[1], {"loss": "min"}, save_last=True, keep_top_k=2)
print("training", flush=True)
model.fit(x, y, epochs=1000, batch_size=32, verbose=0, callbacks=[cb])
"""


def test_sigkill_during_a_write_leaves_only_loadable_files(tmp_path, tiny_model):
    folder = tmp_path / "ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    killed_during = None
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
        while proc.poll() is None and time.monotonic() < deadline:
            if (folder / "manifest.json").exists():
                manifest = read_manifest(folder)
                temps = [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]
                epochs = {a["epoch"] for a in manifest["artifacts"]}
                if temps and len(epochs) >= 3:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_during = temps
                    break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and killed_during is None:
            proc.kill()
        proc.wait()
    assert killed_during, "the training process ended before a write could be interrupted"
    assert proc.returncode == -signal.SIGKILL

    manifest = read_manifest(folder)
    finals = [p for p in folder.iterdir() if not p.name.startswith(".tmp-")]
    for path in finals:
        if path.name not in (MANIFEST_NAME, HISTORY_NAME):
            keras.models.load_model(path)  # raises on a truncated or corrupt file
    latest = {os.path.basename(a["path"]): a for a in manifest["artifacts"]}
    best = manifest["basis"]["best"]["loss"]
    assert (folder / "best_loss.keras").exists()
    assert latest["best_loss.keras"]["epoch"] == best["epoch"]
    assert latest["best_loss.keras"]["metrics"]["loss"] == best["value"]

    resumed = CkptCallback(tmp_path, {"loss": "min"}, save_last=True, keep_top_k=2)
    assert resumed.policy.best["loss"].epoch == best["epoch"]
    resumed.set_model(tiny_model())
    resumed.on_train_begin({})
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
