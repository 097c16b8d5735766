"""ENOSPC and EPERM at each step of a publish; the manifest always matches the files.

The folder is on a small tmpfs (``tmpfs`` fixture: skipped with the reason where it
cannot be mounted). "Real" steps fill that file system to the last byte right when
the step starts, so the step meets a real ``ENOSPC``; the fill is triggered by a
monkeypatch wrapping the step's function (``CkptCallback._write_to`` for the temp
write, ``Ledger._rename`` for the pending-manifest write, ``os.replace``
(after the real rename) for the commit-manifest write, ``BasisCallback.forget`` for
the retention delete). A rename does not allocate, so a full disk cannot fail it:
there the ``ENOSPC`` is injected by a monkeypatch of ``os.replace`` raising it. EPERM
is real: ``chattr +i`` on the file the rename replaces or the retention deletes.

After each fault: the error is a ``BackgroundJobError`` caused by a ``FileWriteError``
with the fault's errno, its text, the file and its folder; the manifest on disk
matches the files (through its pending entries); after the next start (space freed),
it matches exactly with no pending entry and no temp file left.
"""

from __future__ import annotations

import errno
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from faultlib import chattr_immutable, fill, free, manifest_problems  # noqa: E402

from cvml_core.artifacts.atomic import FileWriteError  # noqa: E402
from cvml_core.artifacts.callback import BasisCallback  # noqa: E402
from cvml_core.artifacts.ledger import Ledger  # noqa: E402
from cvml_core.artifacts.worker import BackgroundJobError  # noqa: E402

LOGS = [{"loss": 3.0}, {"loss": 2.0}, {"loss": 1.0}]


def keras_load(path):
    import keras

    return keras.models.load_model(path)


def _model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _arm(step, monkeypatch, mount, folder):
    """Make ``step`` of the next publish fail."""
    from cvml_ckpt import CkptCallback

    real_replace = os.replace

    def fill_then(fn):
        def wrapped(*args, **kwargs):
            fill(mount)
            return fn(*args, **kwargs)
        return wrapped

    if step == "temp write":
        monkeypatch.setattr(CkptCallback, "_write_to", fill_then(CkptCallback._write_to))
    elif step == "pending manifest write":
        monkeypatch.setattr(Ledger, "_rename", fill_then(Ledger._rename))
    elif step == "rename (injected)":
        def replace(src, dst):
            if Path(dst).name != "manifest.json":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_replace(src, dst)
        monkeypatch.setattr(os, "replace", replace)
    elif step == "commit manifest write":
        def replace(src, dst):
            real_replace(src, dst)
            if Path(dst).name != "manifest.json":
                fill(mount)
        monkeypatch.setattr(os, "replace", replace)
    elif step == "retention delete":
        monkeypatch.setattr(BasisCallback, "forget", fill_then(BasisCallback.forget))
    elif step == "rename EPERM":
        chattr_immutable(folder / "best_loss.keras")
    elif step == "retention EPERM":
        chattr_immutable(folder / "best_loss.epoch0001.keras")


STEPS = ["temp write", "pending manifest write", "rename (injected)", "commit manifest write",
         "retention delete", "rename EPERM", "retention EPERM"]


@pytest.mark.parametrize("step", STEPS)
def test_ckpt_fault_at_each_step(step, tmpfs, monkeypatch, capsys):
    from cvml_ckpt import CkptCallback

    log_dir = tmpfs / "run"
    folder = log_dir / "ckpt"
    model = _model()
    cb = CkptCallback(log_dir, {"loss": "min"}, keep_top_k=2)
    cb.set_model(model)
    cb.on_train_begin({})
    for epoch, logs in enumerate(LOGS[:2]):
        cb.on_epoch_end(epoch, dict(logs))
        # Each save written before the next: a save still waiting would be replaced
        # (supersede), leaving no epoch-1 file for the retention step to delete.
        cb.wait_for_background()
    _arm(step, monkeypatch, tmpfs, folder)
    with pytest.raises(BackgroundJobError) as info:  # ckpt is strict: training stops
        cb.on_epoch_end(2, dict(LOGS[2]))
        cb.on_train_end(dict(LOGS[2]))
    message = str(info.value) + " " + str(info.value.__cause__)
    with capsys.disabled():
        print(f"\n[{step}] the user sees: {type(info.value).__name__}: {message[:400]}")
    cause = info.value.__cause__
    code = errno.EPERM if "EPERM" in step else errno.ENOSPC
    assert isinstance(cause, FileWriteError) and cause.errno == code
    assert str(cause).endswith(f" in {folder} failed: {os.strerror(code)}")
    assert ".keras" in str(cause) or "manifest.json" in str(cause)
    monkeypatch.undo()
    assert manifest_problems(folder, settled=False) == []

    # the next start, with space (and permissions) back
    free(tmpfs)
    os.system(f"chattr -R -i {folder} 2>/dev/null")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = CkptCallback(log_dir, {"loss": "min"}, keep_top_k=2)
    resumed.set_model(model)
    resumed.on_train_begin({})
    assert manifest_problems(folder) == []
    assert resumed.policy.best["loss"].epoch in (2, 3)
    kept = keras_load(folder / "best_loss.keras")  # the best kept is whole
    assert all(np.array_equal(a, b) for a, b in zip(
        kept.get_weights(), model.get_weights(), strict=True))  # (no step trained)


@pytest.mark.parametrize("step", ["temp write", "commit manifest write"])
def test_tflite_fault(step, tmpfs, monkeypatch, capsys):
    import cvml_tflite.callback as tflite_callback
    from ai_edge_litert.interpreter import Interpreter
    from cvml_tflite import TFLiteCallback
    from cvml_tflite.callback import TFLiteWarning

    log_dir = tmpfs / "run"
    folder = log_dir / "tflite"
    model = _model()
    cb = TFLiteCallback(log_dir, {"loss": "min"})
    cb.set_model(model)
    cb.on_train_begin({})
    cb.on_epoch_end(0, dict(LOGS[0]))
    cb.wait_for_background()
    real_replace, real_run = os.replace, tflite_callback.run_conversion
    if step == "temp write":  # real: the worker process writes into a full disk
        def run(*args, **kwargs):
            fill(tmpfs)
            return real_run(*args, **kwargs)
        monkeypatch.setattr(tflite_callback, "run_conversion", run)
    else:
        def replace(src, dst):
            real_replace(src, dst)
            if Path(dst).name != "manifest.json":
                fill(tmpfs)
        monkeypatch.setattr(os, "replace", replace)
    with pytest.warns(TFLiteWarning) as caught:
        cb.on_epoch_end(1, dict(LOGS[1]))
        cb.on_train_end(dict(LOGS[1]))
    message = " ".join(str(w.message) for w in caught)
    with capsys.disabled():
        print(f"\n[tflite {step}] the user sees: TFLiteWarning: {message[:400]}")
    assert str(folder) in message and "best_loss.tflite" in message
    assert os.strerror(errno.ENOSPC) in message
    monkeypatch.undo()
    assert manifest_problems(folder, settled=False) == []
    free(tmpfs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = TFLiteCallback(log_dir, {"loss": "min"})
    resumed.set_model(model)
    resumed.on_train_begin({})
    assert manifest_problems(folder) == []
    interpreter = Interpreter(model_path=str(folder / "best_loss.tflite"))  # the kept best
    interpreter.allocate_tensors()
    x = np.full((1, 4), 0.5, "float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, model(x), atol=1e-5)  # (no step trained)
