"""When Keras internals the snapshot relies on change: model.save takes over, with a warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from cvml_ckpt import CkptCallback, snapshot, writer

from cvml_core.keras_compat import keras


class KeepWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = [np.array(w) for w in self.model.get_weights()]


def fit(model, data, callbacks, epochs):
    x, y = data
    model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0, callbacks=callbacks)


def ckpt_warnings(record):
    return [w for w in record if "cvml-ckpt" in str(w.message)]


@pytest.mark.parametrize("background", [True, False])
def test_a_walk_that_no_longer_shows_its_saveable_falls_back_to_model_save(
    tmp_path, tiny_model, tiny_data, ck, monkeypatch, background
):
    # What a Keras whose _save_state renamed its local `saveable` would look like.
    monkeypatch.setattr(snapshot, "_caller_saveable", lambda: None)
    states = KeepWeights()
    cb = CkptCallback(tmp_path, {"loss": "min"}, save_last=True, background=background)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(tiny_model(), tiny_data, [states, cb], epochs=3)
    found = ckpt_warnings(record)
    assert len(found) == 1 and "saveable" in str(found[0].message)
    assert cb.snapshots is False
    manifest = ck.manifest(tmp_path)
    assert [e["epoch"] for e in manifest["artifacts"] if e["basis_key"] is None] == [1, 2, 3]
    assert all(e["details"]["background"] is False for e in manifest["artifacts"])
    loaded = keras.models.load_model(tmp_path / "ckpt" / "last.keras")
    for got, want in zip(loaded.get_weights(), states.weights[3], strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("background", [True, False])
def test_a_written_file_keras_would_not_read_switches_to_model_save_for_the_run(
    tmp_path, tiny_model, tiny_data, ck, monkeypatch, background
):
    # What a Keras that renamed the weights member of its .keras zip would look like.
    monkeypatch.setattr(writer, "WEIGHTS_MEMBER", "model.weights.v2.h5")
    states = KeepWeights()
    cb = CkptCallback(tmp_path, {"loss": "min"}, save_last=True, background=background)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(tiny_model(), tiny_data, [states, cb], epochs=3)
    found = ckpt_warnings(record)
    assert len(found) == 1 and "model.weights.h5" in str(found[0].message)
    assert cb.snapshots is False
    folder = tmp_path / "ckpt"
    manifest = ck.manifest(tmp_path)
    lasts = [e for e in manifest["artifacts"] if e["basis_key"] is None]
    # On the training thread the same epoch is saved again at once. In the background the
    # first (unreadable) file is dropped, and so is epoch 2 if its snapshot was queued
    # before the check ended; model.save takes over from the next epoch.
    epochs = [e["epoch"] for e in lasts]
    assert epochs in ([2, 3], [3]) if background else epochs == [1, 2, 3]
    assert all(e["details"]["background"] is False for e in lasts)
    loaded = keras.models.load_model(folder / "last.keras")
    for got, want in zip(loaded.get_weights(), states.weights[3], strict=True):
        np.testing.assert_array_equal(got, want)
    best = manifest["basis"]["best"]["loss"]
    best_entry = [e for e in manifest["artifacts"] if e["basis_key"] == "loss"][-1]
    assert best["epoch"] == best_entry["epoch"]
    loaded = keras.models.load_model(folder / "best_loss.keras")
    for got, want in zip(loaded.get_weights(), states.weights[best["epoch"]], strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_last_epoch_lost_to_a_bad_first_file_is_saved_at_train_end(
    tmp_path, tiny_model, tiny_data, ck, monkeypatch
):
    monkeypatch.setattr(writer, "WEIGHTS_MEMBER", "model.weights.v2.h5")
    states = KeepWeights()
    cb = CkptCallback(tmp_path, {"loss": "min"}, skip_from_start=1)  # only epoch 2 is due
    with pytest.warns(RuntimeWarning, match="cvml-ckpt"):
        fit(tiny_model(), tiny_data, [states, cb], epochs=2)
    manifest = ck.manifest(tmp_path)
    assert [e["epoch"] for e in manifest["artifacts"]] == [2]
    assert manifest["basis"]["best"]["loss"]["epoch"] == 2
    loaded = keras.models.load_model(tmp_path / "ckpt" / "best_loss.keras")
    for got, want in zip(loaded.get_weights(), states.weights[2], strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("save_weights_only", [True, False])
def test_a_good_first_file_passes_the_check_without_a_warning(
    tmp_path, tiny_model, tiny_data, ck, save_weights_only
):
    cb = CkptCallback(tmp_path, {"loss": "min"}, save_weights_only=save_weights_only)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(tiny_model(), tiny_data, [cb], epochs=2)
    assert ckpt_warnings(record) == [] and cb.snapshots is True
    assert [e["details"]["background"] for e in ck.manifest(tmp_path)["artifacts"]] == [True] * 2
