"""Backups and the resume at the step on the backend Keras runs on (KERAS_BACKEND), and
what tf_keras (``TF_USE_LEGACY_KERAS=1``) accepts: steps, through its own
``BackupAndRestore`` (resumed in ``tests/distributed/test_tf_keras_workers.py``).

CI runs it on TensorFlow (the core session), JAX, torch and tf_keras (``nox -s backends``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cvml_core.keras_compat import keras, uses_legacy_keras

pytest.importorskip("cvml_ckpt")
from cvml_ckpt import CkptCallback  # noqa: E402

BASIS = {"val_loss": "min"}


def test_tf_keras_backs_up_by_steps_and_refuses_the_rest_by_name(tmp_path):
    if not uses_legacy_keras():
        pytest.skip("tf_keras only (TF_USE_LEGACY_KERAS=1)")
    with pytest.raises(ValueError, match="TF_USE_LEGACY_KERAS=1 .*backup_every_seconds=5"):
        CkptCallback(tmp_path, BASIS, backup_every_seconds=5)
    with pytest.raises(ValueError, match="local log_dir.*log_dir='s3://bucket/run'"):
        CkptCallback("s3://bucket/run", BASIS, backup_every_steps=5)
    cb = CkptCallback(tmp_path, BASIS, backup_every_steps=5)
    assert isinstance(cb.legacy_backup, keras.callbacks.BackupAndRestore)
    assert cb.legacy_backup.save_freq == 5


@pytest.mark.skipif(uses_legacy_keras(), reason="backups need Keras 3")
def test_a_crashed_fit_resumes_at_the_step(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
    from backup_workload import EPOCHS, STEPS, build, data, fit

    class Crash(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.02)  # steps longer than this tiny model's writes
            Crash.steps += 1
            if Crash.steps == 13:
                raise KeyboardInterrupt

    reference = fit(build(), data(), EPOCHS, [], shuffle=False).history
    cb = CkptCallback(tmp_path, BASIS, backup_every_steps=2)
    with pytest.raises(KeyboardInterrupt):
        fit(build(), data(), EPOCHS, [cb, Crash()], shuffle=False)
    cb.worker.wait()
    model, again = build(), CkptCallback(tmp_path, BASIS, backup_every_steps=2)
    history = fit(model, data(), EPOCHS, [again], shuffle=False).history
    epoch, step = again.resumed_from
    assert 8 <= epoch * 8 + step <= 13  # no later than the crash, and a backup was written
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == STEPS
    assert len(history["loss"]) == EPOCHS - epoch
    # the partial epoch's logs cover the whole epoch, as in a run never interrupted
    # (in the same order: numpy's shuffle would depend on the epoch fit started at)
    np.testing.assert_allclose(history["loss"], reference["loss"][epoch:], rtol=1e-4)
    assert not (tmp_path / "ckpt" / "backup.weights.h5").exists()
