"""How CkptCallback's worker gets its copy of the model (the shadow), on the backend
Keras runs on (KERAS_BACKEND; CI runs this module on TensorFlow, JAX and torch).

In one process no first save runs ``model.save`` on the training thread: on TensorFlow
and torch the worker saves the live model; on JAX (whose ``fit`` keeps the state apart
from the variables) it builds the shadow from the live model's config. A config holds
no assets, so a shadow built from it whose ``.keras`` file holds assets drops that file
(its keys roll back) and the next save writes the live model's source: every published
file holds the live model's assets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvml_core.keras_compat import keras, uses_legacy_keras

pytest.importorskip("cvml_ckpt")
pytestmark = pytest.mark.skipif(uses_legacy_keras(), reason="tf_keras saves on the training thread")


@keras.saving.register_keras_serializable(package="cvml_test_shadow")
class Tagged(keras.layers.Layer):
    """An identity layer with an asset: its tag is saved as a file, not in its config."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.tag = "unset"

    def call(self, x):
        return x

    def save_assets(self, dir_path):
        Path(dir_path, "tag.txt").write_text(self.tag)

    def load_assets(self, dir_path):
        self.tag = Path(dir_path, "tag.txt").read_text()


def _fit(tmp_path, *layers, epochs=4):
    from cvml_ckpt import CkptCallback

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), *layers, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    cb = CkptCallback(tmp_path, {"loss": "min"})
    kept: dict[int, list[np.ndarray]] = {}  # the weights at each (1-based) epoch's end
    keep = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: kept.update(
        {epoch + 1: [np.array(w) for w in model.get_weights()]}))
    # after each epoch the checkpoint's write is awaited: which files exist is then
    # independent of the worker's timing (a newer best replaces a waiting one)
    wait = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: cb.worker.wait(raise_error=False))
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=[cb, wait, keep])
    return model, cb, kept


def test_no_first_save_runs_model_save_on_the_training_thread(tmp_path):
    model, cb, kept = _fit(tmp_path, keras.layers.Dense(3))
    assert cb.snapshot_counts["source"] == 0, cb.snapshot_counts
    assert cb.snapshot_counts["host"] >= 1 and cb.snapshot_counts["rebuilt"] == 0
    loaded = keras.models.load_model(tmp_path / "ckpt" / "best_loss.keras")
    epoch = cb.committed["loss"].epoch
    for got, want in zip(loaded.get_weights(), kept[epoch], strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_best_file_holds_the_live_models_assets(tmp_path):
    tagged = Tagged()
    tagged.tag = "live"
    model, cb, kept = _fit(tmp_path, tagged)
    loaded = keras.models.load_model(tmp_path / "ckpt" / "best_loss.keras")
    assert loaded.layers[0].tag == "live"
    backend = keras.backend.backend()
    # JAX: the first file, from the config, held the config's assets: dropped, rebuilt
    assert cb.snapshot_counts["rebuilt"] == (1 if backend == "jax" else 0), cb.snapshot_counts
    # ... and the next save wrote the live model's source, on the training thread
    assert cb.snapshot_counts["source"] == (1 if backend == "jax" else 0), cb.snapshot_counts
    epoch = cb.committed["loss"].epoch
    assert epoch >= (2 if backend == "jax" else 1), epoch  # JAX: epoch 1 was dropped
    for got, want in zip(loaded.get_weights(), kept[epoch], strict=True):
        np.testing.assert_array_equal(got, want)
