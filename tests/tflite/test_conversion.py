"""Real conversions in each mode, checked with real LiteRT inference; failures and crashes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from cvml_tflite import TFLiteCallback
from cvml_tflite.callback import TFLiteWarning

from cvml_core import BackgroundJobError


@pytest.fixture(scope="module")
def trained():
    """A tiny classifier trained to high accuracy (not random weights), and its data."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.random((96, 8)).astype("float32")
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=60, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.9
    return model, x, y


def _fit(model, x, y, callback, epochs=2):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TFLiteWarning)
        history = model.fit(x, y, validation_data=(x, y), epochs=epochs, batch_size=32,
                            verbose=0, callbacks=[callback])
    return history, [w for w in caught if issubclass(w.category, TFLiteWarning)]


@pytest.mark.parametrize("quantization", [None, "float16", "dynamic", "int8"])
def test_each_mode_writes_a_verified_file(tmp_path, trained, read_manifest, run_tflite,
                                          quantization):
    model, x, y = trained
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"}, at_train_end=True,
                        quantization=quantization, sample_data=x)
    history, warned = _fit(model, x, y, cb, epochs=1)
    assert warned == []

    manifest = read_manifest(tmp_path)
    by_name = {Path(a["path"]).name: a for a in manifest["artifacts"]}
    assert set(by_name) == {"best_val_loss.tflite", "final.tflite"}
    best = by_name["best_val_loss.tflite"]
    assert best["kind"] == "tflite" and best["epoch"] == 1 and best["basis_key"] == "val_loss"
    assert best["metrics"]["val_loss"] == pytest.approx(history.history["val_loss"][0])
    assert by_name["final.tflite"]["basis_key"] is None
    details = best["details"]
    assert details["quantization"] == (quantization or "float32")
    assert details["size"] == (tmp_path / "tflite" / "best_val_loss.tflite").stat().st_size
    assert details["verified"] is True and details["sample_source"] == "data"
    assert details["top1_agreement"] >= 0.9
    assert details["max_abs_error"] <= details["max_error"]

    # An independent check with LiteRT: the file computes what the Keras model computes.
    keras_out = model.predict(x, verbose=0)
    lite_out, input_dtype = run_tflite(tmp_path / "tflite" / "best_val_loss.tflite", x)
    assert (input_dtype == np.int8) == (quantization == "int8")
    tolerance = {None: 1e-5, "float16": 5e-3, "dynamic": 5e-2, "int8": 0.1}[quantization]
    assert np.max(np.abs(lite_out - keras_out)) <= tolerance
    assert np.mean(lite_out.argmax(1) == keras_out.argmax(1)) >= 0.9
    if quantization == "int8":
        assert details["max_abs_error"] > 0  # really quantized, not a float file


def test_without_sample_data_verifies_on_random_inputs(tmp_path, tiny_model, tiny_data,
                                                       read_manifest):
    x, y = tiny_data
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"})
    _, warned = _fit(tiny_model(), x, y, cb, epochs=1)
    assert warned == []
    (artifact,) = read_manifest(tmp_path)["artifacts"]
    assert artifact["details"]["sample_source"] == "random"
    assert artifact["details"]["verified"] is True


def test_handed_over_sample_data_is_used(tmp_path, tiny_model, tiny_data, read_manifest):
    x, y = tiny_data
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"}, verify_samples=5)
    cb.set_sample_data(x[:20], y[:20])
    _fit(tiny_model(), x, y, cb, epochs=1)
    (artifact,) = read_manifest(tmp_path)["artifacts"]
    assert artifact["details"]["sample_source"] == "data"
    assert artifact["details"]["verify_samples"] == 5


def test_over_threshold_file_is_kept_marked_and_warned(tmp_path, trained, read_manifest):
    model, x, y = trained
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"}, quantization="float16",
                        sample_data=x, max_error=0.0)
    _, warned = _fit(model, x, y, cb, epochs=1)
    (artifact,) = read_manifest(tmp_path)["artifacts"]
    assert (tmp_path / "tflite" / "best_val_loss.tflite").exists()
    assert artifact["details"]["verified"] is False
    error = artifact["details"]["max_abs_error"]
    assert error > 0
    (warning,) = warned
    text = str(warning.message)
    assert "best_val_loss.tflite" in text and "failed verification" in text
    assert f"max_abs_error={error:.3g}" in text and "allowed 0" in text


def _erfinv_model():
    import keras
    from cvml_tflite_test_layers import Erfinv

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="tanh"),
                              Erfinv(), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_unsupported_op_warns_with_the_converters_message(tmp_path, read_manifest):
    x = np.random.default_rng(0).random((16, 4)).astype("float32") * 0.5
    y = x.sum(1)
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"}, skip_from_start=1, frequency=2)
    history, warned = _fit(_erfinv_model(), x, y, cb, epochs=4)
    assert len(history.history["loss"]) == 4  # training went on
    assert len(warned) == 2  # epochs 2 and 4 were due and improved
    text = str(warned[0].message)
    assert "epoch 2" in text and "while convert" in text and "ConverterError" in text
    assert "'tf.Erfinv' op is neither a custom op nor a flex op" in text
    assert not (tmp_path / "tflite" / "manifest.json").exists()  # nothing was recorded
    assert not list((tmp_path / "tflite").glob("*.tflite"))


def test_strict_raises_the_converters_message(tmp_path):
    x = np.random.default_rng(0).random((16, 4)).astype("float32") * 0.5
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"}, strict=True)
    model = _erfinv_model()
    with pytest.raises(BackgroundJobError) as info:
        model.fit(x, x.sum(1), validation_data=(x, x.sum(1)), epochs=1, verbose=0,
                  callbacks=[cb])
    assert "TFLiteConversionError" in str(info.value)
    assert "tf.Erfinv" in str(info.value)
    assert cb.policy.best["val_loss"].epoch is None  # rolled back: the file was not written


def test_worker_crash_is_reported_and_a_new_worker_converts_next(tmp_path, tiny_model,
                                                                  tiny_data, read_manifest):
    import keras
    from cvml_tflite import process
    from cvml_tflite_test_layers import CrashInWorker

    x, y = tiny_data
    keras.utils.set_random_seed(0)
    crashing = keras.Sequential([keras.Input((8,)), CrashInWorker(),
                                 keras.layers.Dense(2, activation="softmax")])
    crashing.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = TFLiteCallback(tmp_path / "a", {"val_loss": "min"})
    history, warned = _fit(crashing, x, y, cb, epochs=2)
    assert len(history.history["loss"]) == 2
    assert warned, "a crash must be reported"
    text = str(warned[0].message)
    assert "WorkerCrashedError" in text and "exit code 3" in text
    crashed_pids = {c["worker_pid"] for c in cb.conversions}

    cb2 = TFLiteCallback(tmp_path / "b", {"val_loss": "min"})
    _, warned = _fit(tiny_model(), x, y, cb2, epochs=1)
    assert warned == []
    (conversion,) = cb2.conversions
    assert conversion["ok"] and conversion["worker_pid"] in process.started_pids
    assert conversion["worker_pid"] not in crashed_pids


def test_worker_is_replaced_after_max_conversions(tmp_path, tiny_model, tiny_data):
    x, y = tiny_data
    cb = TFLiteCallback(tmp_path, {"loss": "min"}, worker_max_conversions=1)
    model = tiny_model()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb], initial_epoch=0)
    pids = [c["worker_pid"] for c in cb.conversions if c["ok"]]
    assert len(pids) == 2 and pids[0] != pids[1]


def test_idle_worker_quits_and_is_replaced(tmp_path, tiny_model, tiny_data, monkeypatch):
    import time

    from cvml_tflite import process

    x, y = tiny_data
    process.shutdown_workers()
    monkeypatch.setenv("CVML_TFLITE_WORKER_IDLE", "1")  # read by the next worker at start
    cb = TFLiteCallback(tmp_path, {"loss": "min"})
    model = tiny_model()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    idle_worker = process._shared
    assert idle_worker is not None
    deadline = time.monotonic() + 120
    while idle_worker.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert idle_worker.proc.returncode == process.IDLE_EXIT_CODE
    monkeypatch.delenv("CVML_TFLITE_WORKER_IDLE")
    # As if it quit just after being checked: the request meets a process that has
    # exited for idleness, which is retried once on a new worker, not reported.
    monkeypatch.setattr(process.ConverterProcess, "alive", lambda self: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TFLiteWarning)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    first, second = cb.conversions
    assert first["ok"] and second["ok"] and first["worker_pid"] != second["worker_pid"]
