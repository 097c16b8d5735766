"""Backups on object stores (SeaweedFS for s3://, fake-gcs-server for gs://): a fit that
crashes mid-epoch leaves its backup in the bucket, and a new fit resumes at its step."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cvml_ckpt import CkptCallback

from cvml_core.artifacts.manifest import read_manifest
from cvml_core.artifacts.storage import open_store
from cvml_core.keras_compat import keras

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
from backup_workload import EPOCHS, STEPS, build, data, fit  # noqa: E402

BASIS = {"val_loss": "min"}


class Crash(keras.callbacks.Callback):
    """Interrupts the fit at its 13th batch (steps slower than this tiny model's writes)."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.02)
        self.steps += 1
        if self.steps == 13:
            raise KeyboardInterrupt


def test_a_crashed_fit_resumes_at_the_step_from_the_store(store):
    url, options = store
    reference = fit(build(), data(), EPOCHS, [], shuffle=False).history
    cb = CkptCallback(url, BASIS, backup_every_steps=2, storage_options=options)
    with pytest.raises(KeyboardInterrupt):
        fit(build(), data(), EPOCHS, [cb, Crash()], shuffle=False)
    cb.worker.wait()
    folder = open_store(url, options).child("ckpt")
    assert "backup.weights.h5" in folder.names()
    kinds = [a["kind"] for a in read_manifest(folder)["artifacts"]]
    assert "backup" in kinds

    model = build()
    again = CkptCallback(url, BASIS, backup_every_steps=2, storage_options=options)
    history = fit(model, data(), EPOCHS, [again], shuffle=False).history
    epoch, step = again.resumed_from
    assert 8 <= epoch * 8 + step <= 13  # no later than the crash, and a backup was written
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == STEPS
    np.testing.assert_allclose(history["loss"], reference["loss"][epoch:], rtol=1e-4)
    # the finished run deleted its backup, manifest first
    assert "backup.weights.h5" not in folder.names()
