"""Backups every N steps or T seconds, and the resume at the step (TensorFlow backend;
the other backends: tests/backends). The SIGKILL trials are in tests/faults."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from cvml_ckpt import CkptCallback

from cvml_core import TrainInfer
from cvml_core.artifacts.manifest import Manifest, read_manifest

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
import backup_workload as workload  # noqa: E402
from backup_workload import BASIS, EPOCHS, build  # noqa: E402

STEPS_PER_EPOCH = workload.STEPS // EPOCHS


class Stop(Exception):
    pass


class StopAt(keras.callbacks.Callback):
    """Raises at the end of training step ``at`` (a crash: Keras calls no on_train_end)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.steps = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.at:
            raise Stop


def fit(model, callbacks, epochs=EPOCHS):
    # Keras' array shuffle gives a resumed epoch the same order on TensorFlow only (the
    # README's "same batches"): elsewhere the order is fixed instead.
    shuffle = keras.backend.backend() == "tensorflow"
    return workload.fit(model, workload.data(), epochs, callbacks, shuffle=shuffle)


def crash(log_dir, at, **options):
    """A run that backs up and stops at step ``at``; its callback (writes awaited)."""
    cb = CkptCallback(log_dir, BASIS, **options)
    with pytest.raises(Stop):
        fit(build(), [cb, StopAt(at)])
    cb.worker.wait()
    return cb


def backups(log_dir):
    return [e for e in read_manifest(log_dir / "ckpt")["artifacts"] if e["kind"] == "backup"]


@pytest.mark.parametrize("name, value", [
    ("backup_every_steps", 0), ("backup_every_steps", 2.5), ("backup_every_steps", True),
    ("backup_every_seconds", 0), ("backup_every_seconds", -1.0), ("backup_every_seconds", "60"),
])
def test_bad_backup_arguments_name_the_argument(tmp_path, name, value):
    with pytest.raises(ValueError, match=f"{name} must be .*Received: {name}={value!r}"):
        CkptCallback(tmp_path, BASIS, **{name: value})


def test_a_crashed_fit_resumes_at_the_step_with_the_logs_of_an_uninterrupted_run(tmp_path):
    reference = fit(build(), []).history
    crash(tmp_path, at=11, backup_every_steps=2, background=False)  # epoch 2, step 3
    saved = backups(tmp_path)[-1]["details"]
    assert (saved["epoch_index"], saved["step"], saved["iterations"]) == (1, 2, 10)

    model, cb = build(), CkptCallback(tmp_path, BASIS, backup_every_steps=2)
    steps = []
    counter = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: steps.append(batch))
    history = fit(model, [cb, counter]).history
    assert cb.resumed_from == (1, 2)
    # epochs 2 to 4 ran (Keras numbers every batch; the first two only advanced the data)
    assert len(history["loss"]) == EPOCHS - 1 and len(steps) == (EPOCHS - 1) * STEPS_PER_EPOCH
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * STEPS_PER_EPOCH
    # the partial epoch's logs cover the whole epoch: the metric sums were restored
    for key in ("loss", "accuracy", "val_loss"):
        np.testing.assert_allclose(history[key], reference[key][1:], rtol=1e-5)
    # the finished run deleted its backup, manifest first
    assert not (tmp_path / "ckpt" / "backup.weights.h5").exists()
    assert backups(tmp_path) == [] and not read_manifest(tmp_path / "ckpt").get("pending")


def test_the_backup_rolls_through_the_manifest_and_can_be_kept(tmp_path, announced):
    cb = CkptCallback(tmp_path, BASIS, backup_every_steps=3, keep_backup=True)
    # steps longer than this tiny model's, so that writes end between backups
    slow = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: time.sleep(0.02))
    fit(build(), [cb, slow])
    folder = tmp_path / "ckpt"
    entries = backups(tmp_path)
    assert [e["details"]["iterations"] for e in entries] == sorted(
        e["details"]["iterations"] for e in entries)
    assert len(entries) == cb.backups_taken >= 2
    assert sorted(p.name for p in folder.iterdir() if "backup" in p.name) == [
        "backup.weights.h5"]  # one file, replaced by rename; no temporary left
    current = [e for e in Manifest(folder).current if e["kind"] == "backup"]
    assert current == [entries[-1]]
    assert [a.kind for a in announced].count("backup") == len(entries)
    # a kept backup is resumed by the next fit (of a finished run: from its last backup)
    last = entries[-1]["details"]
    model, again = build(), CkptCallback(tmp_path, BASIS)
    fit(model, [again])
    assert again.resumed_from == (last["epoch_index"], last["step"])
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * STEPS_PER_EPOCH


def test_backups_by_time(tmp_path):
    cb = crash(tmp_path, at=20, backup_every_seconds=1e-6)
    assert cb.backups_taken >= 1
    assert backups(tmp_path)[-1]["details"]["iterations"] <= 20


def test_train_infer_resumes_a_backup_by_itself(tmp_path):
    x, y = workload.data()
    cb = CkptCallback(tmp_path, BASIS, backup_every_steps=4, background=False)
    with pytest.raises(Stop):
        TrainInfer(build(), log_dir=tmp_path, basis_dict=BASIS).train(
            (x, y), (x, y), 8, EPOCHS, callbacks=[cb, StopAt(14)], show_results=0)
    assert backups(tmp_path)[-1]["details"]["iterations"] == 12
    model = build()
    again = CkptCallback(tmp_path, BASIS, backup_every_steps=4)
    assert again.backup_start() == (1, 4)
    with warnings.catch_warnings():  # a resume: no "holds the bests of an earlier run"
        warnings.simplefilter("error", RuntimeWarning)
        history = TrainInfer(model, log_dir=tmp_path, basis_dict=BASIS).train(
            (x, y), (x, y), 8, EPOCHS, callbacks=[again], show_results=0)
    assert again.resumed_from == (1, 4)
    assert again.backup_start() is None  # the finished run deleted its backup
    assert len(history.history["loss"]) == EPOCHS - 1
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * STEPS_PER_EPOCH


def test_without_backups_the_batch_hook_is_keras_default(tmp_path):
    """No per-batch work without backups: the batch hook stays Keras' default, which
    lets Keras dispatch batch callbacks asynchronously (a sync per step otherwise)."""
    base = keras.callbacks.Callback.on_train_batch_end
    assert CkptCallback(tmp_path, BASIS).on_train_batch_end.__func__ is base
    with_backups = CkptCallback(tmp_path / "b", BASIS, backup_every_steps=2)
    assert with_backups.on_train_batch_end.__func__ is not base
