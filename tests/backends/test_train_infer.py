"""``TrainInfer`` with the three callbacks, then a resume, on the running backend.

Runs in the core session (TensorFlow) and, in ``nox -s backends``, on JAX, on torch
and with ``TF_USE_LEGACY_KERAS=1`` (tf_keras): the resume restores the weights and
the optimizer state of the checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest

from cvml_core import TrainInfer
from cvml_core.keras_compat import Callback

pytest.importorskip("cvml_ckpt")
pytest.importorskip("cvml_tb")
pytest.importorskip("cvml_tflite")


def _sets():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((96, 8, 8, 3)).astype("float32")
    y = (x[..., 0].mean((1, 2)) > x[..., 2].mean((1, 2))).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x[:64], y[:64]))
    dev = tf.data.Dataset.from_tensor_slices((x[64:], y[64:]))
    return train, dev


class _StateAtStart(Callback):
    def on_train_begin(self, logs=None):
        self.weights = [np.array(w) for w in self.model.get_weights()]
        self.optimizer = [np.array(v) for v in self.model.optimizer.variables]


class _StateAtEnd(Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.weights = [np.array(w) for w in self.model.get_weights()]
        self.optimizer = [np.array(v) for v in self.model.optimizer.variables]


def test_train_then_resume_with_every_callback(tmp_path, tiny_cnn):
    from cvml_ckpt import CkptCallback
    from cvml_tb import TensorboardCallback
    from cvml_tflite import TFLiteCallback

    train, dev = _sets()
    log_dir = str(tmp_path / "run")
    basis = {"val_loss": "min"}

    def callbacks():
        return [
            CkptCallback(log_dir, basis, save_last=True),
            TensorboardCallback(log_dir, basis, image_shape=(8, 8, 3)),
            TFLiteCallback(log_dir, basis, frequency=3),
        ]

    end = _StateAtEnd()
    first = callbacks()
    TrainInfer(tiny_cnn()).train(train, dev, 16, 3, callbacks=[*first, end], show_results=0)
    assert (tmp_path / "run" / "ckpt" / "last.keras").exists()
    assert list((tmp_path / "run" / "tb").rglob("events.out.tfevents.*"))
    converted = [a for a in first[2].manifest.artifacts if a["basis_key"] == "val_loss"]
    assert converted and converted[-1]["details"]["verified"]

    start = _StateAtStart()
    history = TrainInfer(tiny_cnn(seed=1)).train(
        train, dev, 16, 4, start_epoch=3, callbacks=[*callbacks(), start], show_results=0
    )
    assert list(history.epoch) == [3]
    for got, want in zip(start.weights, end.weights, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(start.optimizer) == len(end.optimizer)
    for got, want in zip(start.optimizer, end.optimizer, strict=True):
        np.testing.assert_array_equal(got, want)
