"""cvml-tb without TensorFlow: train on the current backend (jax or torch) and read the
events back with TensorBoard's own reader."""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("checks cvml-tb where TensorFlow is not installed", allow_module_level=True)

import sys  # noqa: E402

import numpy as np  # noqa: E402


def _read(run_dir):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    return {
        tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
    }


def test_scalars_bests_and_images_without_tensorflow(tmp_path):
    import keras
    from cvml_tb import TensorboardCallback

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1)).astype("float32")
    y = (x[:, :4].sum((1, 2, 3)) > x[:, 4:].sum((1, 2, 3))).astype("int32")
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(2, 3),
        keras.layers.Flatten(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    callback = TensorboardCallback(
        str(tmp_path), {"val_loss": "min"}, image_shape=(8, 8, 1), sample_data=(x[:4], y[:4]),
    )
    history = model.fit(x, y, validation_data=(x, y), epochs=3, batch_size=8, verbose=0,
                        callbacks=[callback])
    assert "tensorflow" not in sys.modules

    train, validation = _read(tmp_path / "tb" / "train"), _read(tmp_path / "tb" / "validation")
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2]
    np.testing.assert_allclose([float(v) for _, v in train["epoch_loss"]],
                               history.history["loss"], rtol=1e-5)
    np.testing.assert_allclose([float(v) for _, v in validation["epoch_loss"]],
                               history.history["val_loss"], rtol=1e-5)
    best = [float(v) for _, v in validation["epoch_loss/best"]]
    assert best == pytest.approx(np.minimum.accumulate(history.history["val_loss"]), rel=1e-5)
    steps, image = validation["best/samples"][-1]
    assert steps in (0, 1, 2) and image[2].startswith(b"\x89PNG")
