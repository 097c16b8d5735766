"""Without TensorFlow: CkptCallback trains, saves a best and a backup, and restores."""

from __future__ import annotations

import json

import keras
import numpy as np
from cvml_ckpt import CkptCallback


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_ckpt_saves_and_restores_without_tensorflow(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = _model()
    cb = CkptCallback(tmp_path, {"val_loss": "min"}, backup_every_steps=2, keep_backup=True)
    model.fit(x, y, validation_data=(x, y), epochs=3, batch_size=8, callbacks=[cb], verbose=0)

    written = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert any(n.endswith(".keras") for n in written), written
    assert "backup.weights.h5" in written, written
    manifest = next(tmp_path.rglob("manifest.json"))
    assert json.loads(manifest.read_text())  # the ckpt folder's record

    fresh = _model()
    fresh.set_weights([np.zeros_like(w) for w in fresh.get_weights()])
    epoch = CkptCallback.restore(fresh, tmp_path)  # the most recent: val_loss fell each epoch
    assert epoch == 3
    for a, b in zip(model.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
