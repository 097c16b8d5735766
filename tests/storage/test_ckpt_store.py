"""ckpt on object stores (SeaweedFS for s3://, fake-gcs-server for gs://): files land
whole under their final names, read back and load, and a new run resumes from them."""

from __future__ import annotations

import numpy as np
from cvml_ckpt import CkptCallback

from cvml_core.artifacts.manifest import read_manifest
from cvml_core.artifacts.storage import open_store
from cvml_core.keras_compat import keras


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3)).astype("float32")
    y = (x[:, :4].mean((1, 2, 3)) > x[:, 4:].mean((1, 2, 3))).astype("int32")
    return x, y


def test_best_checkpoints_land_in_the_store_and_load(store, tiny_cnn, tmp_path):
    url, options = store
    model = tiny_cnn()
    x, y = _data()
    cb = CkptCallback(url, {"val_loss": "min"}, save_last=True, keep_top_k=2,
                      storage_options=options)
    model.fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[cb])

    folder = open_store(url, options).child("ckpt")
    names = folder.names()
    assert "best_val_loss.keras" in names and "last.keras" in names
    assert not [n for n in names if n.startswith(".tmp-")]
    record = read_manifest(folder)
    named = {a["path"].rsplit("/", 1)[-1] for a in record["artifacts"]}
    assert named <= names and {"best_val_loss.keras", "last.keras"} <= named
    assert all(a["path"].startswith(url) for a in record["artifacts"])

    # last.keras is the last epoch: equal to model.save of the same model
    model.save(tmp_path / "reference.keras")
    reference = keras.models.load_model(tmp_path / "reference.keras")
    with folder.local_copy("last.keras") as path:
        loaded = keras.models.load_model(path)
    for a, b in zip(loaded.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(loaded.optimizer.variables, reference.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # restore from the store into a fresh model, then a new run keeps the best
    fresh = tiny_cnn(seed=1)
    epoch = CkptCallback.restore(fresh, url, storage_options=options)
    assert epoch == 3
    for a, b in zip(fresh.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    again = CkptCallback(url, {"val_loss": "min"}, storage_options=options)
    assert again.policy.best["val_loss"].epoch == record["basis"]["best"]["val_loss"]["epoch"]
