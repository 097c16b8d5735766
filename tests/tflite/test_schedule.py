"""When files are written: the basis schedule, superseding, and training not being held."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from cvml_tflite import TFLiteCallback

import cvml_core


def _linear_model():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _set_epoch_weights(model, epoch):
    """Weights that tell epochs apart: kernel = epoch, bias = 10 * epoch."""
    model.set_weights([np.full((3, 1), float(epoch), np.float32),
                       np.full((1,), 10.0 * epoch, np.float32)])


def _epochs_by_file(manifest):
    written = {}
    for artifact in manifest["artifacts"]:
        written.setdefault(Path(artifact["path"]).name, []).append(artifact["epoch"])
    return written


def test_schedule_skip_frequency_and_keys(tmp_path, read_manifest, run_tflite):
    model = _linear_model()
    cb = TFLiteCallback(tmp_path, {"val_loss": "min", "val_accuracy": "max"},
                        skip_from_start=2, frequency=2, at_train_end=True)
    cb.set_model(model)
    logs = [  # epoch: due?  val_loss improves?  val_accuracy improves?
        {"val_loss": 0.1, "val_accuracy": 0.99},  # 1: not due
        {"val_loss": 0.1, "val_accuracy": 0.99},  # 2: not due (skipped)
        {"val_loss": 0.5, "val_accuracy": 0.5},  # 3: not due (odd)
        {"val_loss": 0.9, "val_accuracy": 0.5},  # 4: due, first: both
        {"val_loss": 0.1, "val_accuracy": 0.9},  # 5: not due
        {"val_loss": 0.8, "val_accuracy": 0.4},  # 6: due, val_loss
        {"val_loss": 0.8, "val_accuracy": 0.4},  # 7: not due
        {"val_loss": 0.85, "val_accuracy": 0.6},  # 8: due, val_accuracy
        {"val_loss": 0.85, "val_accuracy": 0.6},  # 9: final
    ]
    cb.on_train_begin({})
    for epoch, epoch_logs in enumerate(logs):
        _set_epoch_weights(model, epoch + 1)
        cb.on_epoch_begin(epoch, {})
        cb.on_epoch_end(epoch, dict(epoch_logs))
        cb.wait_for_background()  # one conversion at a time, so none is superseded here
    cb.on_train_end(dict(logs[-1]))

    manifest = read_manifest(tmp_path)
    assert _epochs_by_file(manifest) == {
        "best_val_loss.tflite": [4, 6],
        "best_val_accuracy.tflite": [4, 8],
        "final.tflite": [9],
    }
    assert manifest["basis"]["best"]["val_loss"] == {"value": 0.8, "epoch": 6}
    x = np.ones((2, 3), np.float32)
    for name, epoch in [("best_val_loss", 6), ("best_val_accuracy", 8), ("final", 9)]:
        out, _ = run_tflite(tmp_path / "tflite" / f"{name}.tflite", x)
        np.testing.assert_allclose(out, np.full((2, 1), 3.0 * epoch + 10.0 * epoch), rtol=1e-6)


def test_superseded_conversion_still_writes_every_improved_key(tmp_path, read_manifest,
                                                               run_tflite):
    """Epochs end faster than conversions: queued jobs are replaced, no best is lost."""
    model = _linear_model()
    cb = TFLiteCallback(tmp_path, {"val_loss": "min", "val_accuracy": "max"})
    cb.set_model(model)
    logs = [
        {"val_loss": 0.9, "val_accuracy": 0.5},  # 1: both
        {"val_loss": 0.8, "val_accuracy": 0.4},  # 2: val_loss only
        {"val_loss": 0.85, "val_accuracy": 0.6},  # 3: val_accuracy only
        {"val_loss": 0.85, "val_accuracy": 0.6},  # 4: nothing
    ]
    cb.on_train_begin({})
    for epoch, epoch_logs in enumerate(logs):
        _set_epoch_weights(model, epoch + 1)
        cb.on_epoch_begin(epoch, {})
        cb.on_epoch_end(epoch, dict(epoch_logs))
    cb.on_train_end(dict(logs[-1]))

    assert cb.worker.superseded, "epoch 1 converts while 2 and 3 end: 2's job is replaced"
    manifest = read_manifest(tmp_path)
    last = {}
    for artifact in manifest["artifacts"]:
        last[artifact["basis_key"]] = artifact["epoch"]
    assert last == {"val_loss": 2, "val_accuracy": 3}
    x = np.ones((1, 3), np.float32)
    for key, epoch in last.items():
        out, _ = run_tflite(tmp_path / "tflite" / f"best_{key}.tflite", x)
        np.testing.assert_allclose(out, [[13.0 * epoch]], rtol=1e-6)
    assert not (cb._scratch and cb._scratch.exists()), "snapshots are cleaned up"


def test_training_continues_while_a_conversion_runs(tmp_path, tiny_model, tiny_data,
                                                    read_manifest):
    import keras

    x, y = tiny_data
    begins = {}
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: begins.__setitem__(epoch + 1, time.time())
    )
    cb = TFLiteCallback(tmp_path, {"loss": "min"}, frequency=1)
    tiny_model().fit(x, y, epochs=5, batch_size=64, verbose=0, callbacks=[cb, timer])

    first = cb.conversions[0]  # epoch 1's, unless epoch 2 ended before the worker took it
    assert first["ok"] and first["epoch"] in (1, 2)
    # The epoch after the snapshot began before the conversion of that snapshot ended.
    assert first["snapshot_at"] < begins[first["epoch"] + 1] < first["finished_at"]
    artifact = read_manifest(tmp_path)["artifacts"][0]
    assert artifact["details"]["conversion_finished_at"] == first["finished_at"]
    assert artifact["details"]["conversion_started_at"] <= first["finished_at"]


class _Recorder:
    def __init__(self):
        self.saved = []

    @cvml_core.hookimpl
    def cvml_artifact_saved(self, artifact):
        self.saved.append((artifact, threading.get_ident()))


def test_files_are_announced_on_the_training_thread(tmp_path, tiny_model, tiny_data):
    from cvml_core.plugin_host import loader as plugins
    from cvml_core.plugin_host.loader import PluginSource, load_registry

    recorder = _Recorder()
    plugins._default = load_registry({}, [PluginSource("rec", "dist-rec", "1", module=recorder)])
    x, y = tiny_data
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"}, skip_from_start=1, frequency=1)
    tiny_model().fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[cb])
    assert [(a.kind, Path(a.path).name, a.epoch) for a, _ in recorder.saved] == [
        ("tflite", "best_val_loss.tflite", 2)
    ]
    artifact = recorder.saved[0][0]
    assert artifact.callback == "tflite" and artifact.details["verified"] is True
    assert {thread for _, thread in recorder.saved} == {threading.get_ident()}


def test_resumed_run_keeps_a_better_file(tmp_path, read_manifest):
    model = _linear_model()
    first = TFLiteCallback(tmp_path, {"val_loss": "min"})
    _set_epoch_weights(model, 1)
    first.set_model(model)
    first.on_train_begin({})
    first.on_epoch_end(0, {"val_loss": 0.2})
    first.on_train_end({})

    resumed = TFLiteCallback(tmp_path, {"val_loss": "min"})
    _set_epoch_weights(model, 2)
    resumed.set_model(model)
    resumed.on_train_begin({})
    resumed.on_epoch_end(1, {"val_loss": 0.5})  # worse than the saved best
    resumed.on_train_end({})
    assert resumed.conversions == []
    assert [a["epoch"] for a in read_manifest(tmp_path)["artifacts"]] == [1]
