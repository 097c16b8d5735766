"""The basis state stays true to the files: failed conversions and snapshots, racing jobs."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from cvml_tflite import TFLiteCallback
from cvml_tflite.callback import TFLiteConversionError, TFLiteWarning, _walk_layers

from cvml_core.policy.basis import KeyBest


def _failable_model():
    """``y = kernel . x + bias`` with a layer whose conversion fails while ``fail`` is set."""
    import keras
    from cvml_tflite_test_layers import FailInWorker

    model = keras.Sequential([keras.Input((3,)), FailInWorker(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _set_epoch_weights(model, epoch):
    """Weights that tell epochs apart: the file computes 13 * epoch on ones."""
    model.set_weights([np.full((3, 1), float(epoch), np.float32),
                       np.full((1,), 10.0 * epoch, np.float32)])


def _end_epoch(cb, model, epoch, logs, fail=False, wait=True):
    model.layers[0].fail = fail
    _set_epoch_weights(model, epoch)
    cb.on_epoch_begin(epoch - 1, {})
    cb.on_epoch_end(epoch - 1, dict(logs))
    if wait:
        cb.wait_for_background()


def _tflite_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, TFLiteWarning)]


def test_failed_conversion_is_not_a_best(tmp_path, read_manifest, run_tflite):
    model = _failable_model()
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"})
    cb.set_model(model)
    cb.on_train_begin({})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TFLiteWarning)
        _end_epoch(cb, model, 1, {"val_loss": 0.9})
        _end_epoch(cb, model, 2, {"val_loss": 0.5}, fail=True)  # no file for 0.5
        (message,) = _tflite_warnings(caught)
        assert "epoch 2" in message and "FailInWorker was asked to fail" in message
        # The best is the file's again, and the manifest never claimed epoch 2.
        assert cb.policy.best["val_loss"] == KeyBest(0.9, 1)
        assert read_manifest(tmp_path)["basis"]["best"]["val_loss"] == {"value": 0.9, "epoch": 1}
        # 0.7 is worse than the failed 0.5 but better than the file's 0.9: converted.
        _end_epoch(cb, model, 3, {"val_loss": 0.7})
        cb.on_train_end({})
    assert len(_tflite_warnings(caught)) == 1
    manifest = read_manifest(tmp_path)
    assert [a["epoch"] for a in manifest["artifacts"]] == [1, 3]
    assert manifest["basis"]["best"]["val_loss"] == {"value": 0.7, "epoch": 3}
    out, _ = run_tflite(tmp_path / "tflite" / "best_val_loss.tflite", np.ones((1, 3)))
    np.testing.assert_allclose(out, [[13.0 * 3]], rtol=1e-6)


def test_a_later_job_records_only_bests_with_files(tmp_path, read_manifest):
    """Epoch 2's conversion fails while the final conversion waits: the final job's
    manifest state must not claim epoch 2, and a resumed run converts what beats 0.9."""
    model = _failable_model()
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"}, at_train_end=True)
    cb.set_model(model)
    cb.on_train_begin({})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TFLiteWarning)
        _end_epoch(cb, model, 1, {"val_loss": 0.9})
        _end_epoch(cb, model, 2, {"val_loss": 0.5}, fail=True, wait=False)
        model.layers[0].fail = False
        cb.on_train_end({"val_loss": 0.5})  # the final snapshot converts after epoch 2's
    assert len(_tflite_warnings(caught)) == 1
    manifest = read_manifest(tmp_path)
    assert sorted(Path(a["path"]).name for a in manifest["artifacts"]) == [
        "best_val_loss.tflite", "final.tflite"]
    assert manifest["basis"]["best"]["val_loss"] == {"value": 0.9, "epoch": 1}
    assert cb.policy.best["val_loss"] == KeyBest(0.9, 1)

    resumed = TFLiteCallback(tmp_path, {"val_loss": "min"})
    resumed.set_model(model)
    resumed.on_train_begin({})
    _end_epoch(resumed, model, 3, {"val_loss": 0.7})
    resumed.on_train_end({})
    assert [c["epoch"] for c in resumed.conversions] == [3]
    assert read_manifest(tmp_path)["basis"]["best"]["val_loss"] == {"value": 0.7, "epoch": 3}


def test_a_job_records_the_state_of_what_it_converted(tmp_path, read_manifest, run_tflite):
    """Epoch 1's conversion waits behind a busy worker and epoch 2's replaces it: the
    job that runs converts epoch 2 and records epoch 2's best, not epoch 1's."""
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"})
    cb.set_model(model)
    cb.on_train_begin({})
    holding, release = threading.Event(), threading.Event()
    cb.run_in_background("hold", lambda: holding.set() or release.wait(120) and None)
    assert holding.wait(120)  # running, so that epoch 1's conversion waits behind it
    try:
        for epoch, loss in [(1, 0.9), (2, 0.8)]:
            _set_epoch_weights(model, epoch)
            cb.on_epoch_end(epoch - 1, {"val_loss": loss})
        assert cb.worker.superseded == ["conversion of epoch 1"]
    finally:
        release.set()
    cb.on_train_end({})

    manifest = read_manifest(tmp_path)
    assert [a["epoch"] for a in manifest["artifacts"]] == [2]
    assert [c["epoch"] for c in cb.conversions] == [2]  # epoch 1's snapshot was dropped
    assert manifest["basis"]["best"]["val_loss"] == {"value": 0.8, "epoch": 2}
    out, _ = run_tflite(tmp_path / "tflite" / "best_val_loss.tflite", np.ones((1, 3)))
    np.testing.assert_allclose(out, [[13.0 * 2]], rtol=1e-6)


def _subclassed_model():
    import keras

    class NoConfig(keras.Model):  # no get_config: model.to_json() raises
        def __init__(self, head):
            super().__init__()
            self.head = head

        def call(self, x):
            return self.head(x)

    model = NoConfig(keras.layers.Dense(2, activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_snapshot_error_warns_and_training_goes_on(tmp_path, tiny_data):
    x, y = tiny_data
    cb = TFLiteCallback(tmp_path, {"loss": "min"}, at_train_end=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TFLiteWarning)
        history = _subclassed_model().fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    assert len(history.history["loss"]) == 2
    messages = _tflite_warnings(caught)
    assert len(messages) == 3  # epochs 1, 2 and the final model
    assert "epoch 1" in messages[0] and "NotImplementedError" in messages[0]
    assert "get_config" in messages[0]
    assert cb.conversions == [] and not list((tmp_path / "tflite").glob("*.tflite"))
    assert cb.policy.best["loss"] == KeyBest(None, None)  # no file, no best


def test_snapshot_error_raises_when_strict(tmp_path, tiny_data):
    x, y = tiny_data
    cb = TFLiteCallback(tmp_path, {"loss": "min"}, strict=True)
    with pytest.raises(TFLiteConversionError, match="NotImplementedError"):
        _subclassed_model().fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    assert cb.policy.best["loss"] == KeyBest(None, None)


def test_snapshot_error_keeps_the_best_still_converting(tmp_path, read_manifest):
    """Epoch 2's snapshot fails while epoch 1's conversion is queued: the best is epoch 1's."""
    model = _failable_model()
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"})
    cb.set_model(model)
    cb.on_train_begin({})
    _end_epoch(cb, model, 1, {"val_loss": 0.9}, wait=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TFLiteWarning)
        _end_epoch(cb, model, 2, {"val_loss": 0.5}, fail=threading.Lock(), wait=False)
    model.layers[0].fail = False
    (message,) = _tflite_warnings(caught)
    assert "cannot snapshot the model of epoch 2" in message
    assert cb.policy.best["val_loss"] == KeyBest(0.9, 1)
    cb.on_train_end({})
    assert read_manifest(tmp_path)["basis"]["best"]["val_loss"] == {"value": 0.9, "epoch": 1}


def test_int8_calibrates_on_uint8_images(tmp_path, read_manifest, run_tflite):
    import keras

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 4, 4, 1), dtype=np.uint8)
    y = (x.reshape(64, -1)[:, :8].mean(1) > x.reshape(64, -1)[:, 8:].mean(1)).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, verbose=0)  # trained: top-1 is not a coin toss
    cb = TFLiteCallback(tmp_path, {"loss": "min"}, quantization="int8", sample_data=x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TFLiteWarning)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert _tflite_warnings(caught) == []
    (artifact,) = read_manifest(tmp_path)["artifacts"]
    details = artifact["details"]
    assert details["quantization"] == "int8" and details["sample_source"] == "data"
    assert details["verified"] is True and details["max_abs_error"] > 0
    out, input_dtype = run_tflite(tmp_path / "tflite" / "best_loss.tflite", x)
    assert input_dtype == np.int8
    assert np.max(np.abs(out - model.predict(x, verbose=0))) <= 0.1


def test_layer_walk_finds_nested_layers():
    """The public walk reaches a layer nested in a sub-model, so its module is imported."""
    import keras
    from cvml_tflite_test_layers import FailInWorker

    inner = keras.Sequential([keras.Input((3,)), FailInWorker(), keras.layers.Dense(3)])
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inner(inputs)))
    walked = _walk_layers(model)
    assert len({id(layer) for layer in walked}) == len(walked)  # each once
    assert walked[0] is model and any(layer is inner for layer in walked)
    assert [type(layer).__name__ for layer in walked[1:] if layer is not inner] == [
        "InputLayer", "FailInWorker", "Dense", "Dense"]
    assert "cvml_tflite_test_layers" in {type(layer).__module__ for layer in walked}
