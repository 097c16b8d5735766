"""Real training: files hold the weights of their epoch, load with Keras, resume exactly."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from cvml_ckpt import CkptCallback

import cvml_core
from cvml_core.artifacts.manifest import read_manifest
from cvml_core.keras_compat import keras


class KeepStates(keras.callbacks.Callback):
    """Copies the weights and optimizer variables at each epoch end (1-based keys)."""

    def __init__(self):
        super().__init__()
        self.weights, self.optimizer = {}, {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = [np.array(w) for w in self.model.get_weights()]
        self.optimizer[epoch + 1] = [v.numpy() for v in self.model.optimizer.variables]


class WaitForWrites(keras.callbacks.Callback):
    """Ends each epoch's background write before the next epoch: a newer checkpoint
    supersedes one still waiting, so the files written would otherwise depend on timing.
    A failure stays for the checkpoint callback to raise (at its next epoch end)."""

    def __init__(self, ckpt):
        super().__init__()
        self.ckpt = ckpt

    def on_epoch_end(self, epoch, logs=None):
        self.ckpt.worker.wait(raise_error=False)


def epoch_of(log_dir, name):
    """The epoch the manifest records for the file ``name`` (its last entry)."""
    manifest = read_manifest(log_dir / "ckpt")
    entries = [e for e in manifest["artifacts"] if Path(e["path"]).name == name]
    return entries[-1]["epoch"]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def fit(model, data, callbacks, epochs, initial_epoch=0):
    x, y = data
    return model.fit(
        x, y, validation_data=(x[:16], y[:16]), epochs=epochs, initial_epoch=initial_epoch,
        batch_size=16, shuffle=False, verbose=0, callbacks=callbacks,
    )


def test_each_file_holds_the_state_of_its_epoch_while_training_goes_on(
    tmp_path, tiny_model, tiny_data, ck
):
    model = tiny_model()
    states = KeepStates()
    cb = CkptCallback(tmp_path, {"val_loss": "min", "val_accuracy": "max"}, save_last=True)
    history = fit(model, tiny_data, [states, cb], epochs=5)
    folder = tmp_path / "ckpt"
    val_loss = history.history["val_loss"]
    best_epoch = int(np.argmin(val_loss)) + 1
    assert epoch_of(tmp_path, "best_val_loss.keras") == best_epoch
    for name in ck.files(tmp_path):
        epoch = epoch_of(tmp_path, name)
        loaded = keras.models.load_model(folder / name)
        assert_same(loaded.get_weights(), states.weights[epoch])
        assert_same(loaded.optimizer.variables, states.optimizer[epoch])
    assert epoch_of(tmp_path, "last.keras") == 5
    entry = [e for e in ck.manifest(tmp_path)["artifacts"] if e["basis_key"] == "val_loss"][-1]
    assert entry["epoch"] == best_epoch
    assert entry["metrics"]["val_loss"] == pytest.approx(val_loss[best_epoch - 1])
    assert entry["details"]["format"] == "keras" and entry["details"]["includes_optimizer"]


@pytest.mark.parametrize("include_optimizer", [True, False])
def test_weights_only_files_load_with_load_weights(
    tmp_path, tiny_model, tiny_data, include_optimizer
):
    model = tiny_model()
    states = KeepStates()
    cb = CkptCallback(
        tmp_path, {"loss": "min"}, save_weights_only=True, include_optimizer=include_optimizer
    )
    fit(model, tiny_data, [states, cb], epochs=3)
    path = tmp_path / "ckpt" / "best_loss.weights.h5"
    fresh = tiny_model(seed=1)
    assert CkptCallback.restore(fresh, tmp_path, "loss") == 3
    assert_same(fresh.get_weights(), states.weights[3])
    if include_optimizer:
        assert_same(fresh.optimizer.variables, states.optimizer[3])
    other = tiny_model(seed=2)
    other.optimizer.build(other.trainable_variables)
    other.load_weights(path)  # the public Keras API reads the file too
    assert_same(other.get_weights(), states.weights[3])


def test_restore_then_resume_trains_exactly_as_an_uninterrupted_run(
    tmp_path, tiny_model, tiny_data
):
    straight = tiny_model()
    fit(straight, tiny_data, [], epochs=5)

    first = tiny_model()
    fit(first, tiny_data, [CkptCallback(tmp_path, {"val_loss": "min"}, save_last=True)], epochs=3)
    resumed = tiny_model(seed=7)
    start = CkptCallback.restore(resumed, tmp_path)
    assert start == 3
    fit(resumed, tiny_data, [CkptCallback(tmp_path, {"val_loss": "min"})], 5, initial_epoch=start)
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_restore_latest_respects_max_epoch_and_an_empty_dir_gives_zero(
    tmp_path, tiny_model, tiny_data
):
    model = tiny_model()
    states = KeepStates()
    cb = CkptCallback(tmp_path, {"loss": "min"}, keep_top_k=None)
    fit(model, tiny_data, [states, cb, WaitForWrites(cb)], epochs=4)
    fresh = tiny_model(seed=3)
    assert cb.restore_latest(fresh, max_epoch=2) == 2
    assert_same(fresh.get_weights(), states.weights[2])
    assert cb.restore_latest(fresh) == 4
    assert CkptCallback.restore(fresh, tmp_path / "elsewhere") == 0
    with pytest.raises(ValueError, match="which must be 'latest' or a basis key"):
        CkptCallback.restore(fresh, tmp_path, which="val_los")


def test_a_failed_background_write_raises_on_the_training_thread_and_keeps_the_best(
    tmp_path, tiny_model, tiny_data, ck
):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    # The epoch-2 save must keep the epoch-1 best under this name, which a folder blocks.
    (folder / "best_loss.epoch0001.keras").mkdir()
    states = KeepStates()
    cb = CkptCallback(tmp_path, {"loss": "min"}, keep_top_k=2)
    with pytest.raises(cvml_core.BackgroundJobError, match="checkpoint of epoch 2"):
        fit(tiny_model(), tiny_data, [states, cb, WaitForWrites(cb)], epochs=4)
    loaded = keras.models.load_model(folder / "best_loss.keras")
    assert epoch_of(tmp_path, "best_loss.keras") == 1
    assert_same(loaded.get_weights(), states.weights[1])
    assert ck.manifest(tmp_path)["basis"]["best"]["loss"]["epoch"] == 1
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_writing_on_the_training_thread_gives_the_same_files(tmp_path, tiny_model, tiny_data, ck):
    states = KeepStates()
    cb = CkptCallback(tmp_path, {"loss": "min"}, background=False, save_last=True)
    fit(tiny_model(), tiny_data, [states, cb], epochs=2)
    assert ck.files(tmp_path) == ["best_loss.keras", "last.keras"]
    loaded = keras.models.load_model(tmp_path / "ckpt" / "best_loss.keras")
    assert_same(loaded.get_weights(), states.weights[2])
    assert ck.manifest(tmp_path)["artifacts"][-1]["details"]["background"] is False


def test_created_by_name(tmp_path):
    cb = cvml_core.create_callback("ckpt", log_dir=tmp_path, basis_dict={"val_loss": "min"})
    assert isinstance(cb, CkptCallback)
    names = [info.name for info in cvml_core.available_callbacks()]
    assert "ckpt" in names


def test_importing_the_package_and_listing_it_does_not_import_tensorflow():
    code = (
        "import sys, cvml_core, cvml_ckpt\n"
        "assert 'ckpt' in [c.name for c in cvml_core.available_callbacks()]\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_on_the_training_thread_it_saves_the_live_model_with_the_public_keras_api(
    tmp_path, tiny_model, tiny_data, ck
):
    states = KeepStates()
    cb = CkptCallback(tmp_path, {"loss": "min"}, save_weights_only=True, background=False)
    fit(tiny_model(), tiny_data, [states, cb], epochs=2)
    fresh = tiny_model(seed=4)
    assert CkptCallback.restore(fresh, tmp_path) == 2
    assert_same(fresh.get_weights(), states.weights[2])
    assert_same(fresh.optimizer.variables, states.optimizer[2])
    details = ck.manifest(tmp_path)["artifacts"][-1]["details"]
    assert details["background"] is False and details["includes_optimizer"] is True


def test_snapshots_copied_into_the_shadow_or_to_host_while_it_is_busy_hold_their_epoch(
    tmp_path, tiny_model, tiny_data, ck
):
    """While a write uses the shadow, the next snapshot goes to numpy; both kinds of
    snapshot give files that hold exactly their epoch's state."""

    class SlowSecondWrite(CkptCallback):
        kinds = []

        def snapshot(self, epoch, logs):
            snap = super().snapshot(epoch, logs)
            self.kinds.append(snap.where)
            return snap

        def write(self, job):
            if job.epoch == 2:
                time.sleep(1.0)  # the next epochs end while this write holds the shadow
            yield from super().write(job)

    class DrainBeforeEpoch7(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 6:
                cb.worker.wait()  # epoch 7's snapshot then finds the shadow idle

    states = KeepStates()
    cb = SlowSecondWrite(tmp_path, {"loss": "min"}, save_last=True, keep_top_k=None)
    fit(tiny_model(), tiny_data, [states, cb, DrainBeforeEpoch7()], epochs=8)
    assert cb.kinds[2] == "host" and cb.kinds[6] == "shadow", cb.kinds
    for name in ck.files(tmp_path):
        loaded = keras.models.load_model(tmp_path / "ckpt" / name)
        epoch = epoch_of(tmp_path, name)
        assert_same(loaded.get_weights(), states.weights[epoch])
        assert_same(loaded.optimizer.variables, states.optimizer[epoch])


def test_a_non_chief_scratch_folder_goes_even_when_training_raises(
    tmp_path, tiny_model, tiny_data, monkeypatch
):
    """Keras skips on_train_end when fit raises: the copy of the model a non-chief task
    saved in a scratch folder (off log_dir) is still removed, at the latest when the
    callback is collected."""
    import gc
    import json

    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    ))

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("stop")

    def scratch_folders():
        return set(Path(tempfile.gettempdir()).glob("cvml-ckpt-*"))

    before = scratch_folders()
    cb = CkptCallback(tmp_path, {"loss": "min"})
    x, y = tiny_data
    with pytest.raises(RuntimeError, match="stop"):
        tiny_model().fit(x, y, epochs=3, verbose=0, callbacks=[cb, Stop()])
    assert not cb.chief and not (tmp_path / "ckpt").exists()  # never writes in log_dir
    (scratch,) = scratch_folders() - before
    assert any(scratch.iterdir())  # the model.save copy the shadow is built from
    del cb
    gc.collect()
    assert not scratch.exists()
