"""A TrainInfer run with every callback on s3:// and gs://, then a resume from the store:
checkpoints, verified .tflite files and TensorBoard events (read back with
TensorBoard's own reader) are objects of the bucket; the manifest names them all."""

from __future__ import annotations

import numpy as np
from cvml_ckpt import CkptCallback
from cvml_tb import TensorboardCallback
from cvml_tflite import TFLiteCallback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cvml_core import TrainInfer
from cvml_core.artifacts.manifest import read_manifest
from cvml_core.artifacts.storage import open_store


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3)).astype("float32")
    y = (x[:, :4].mean((1, 2, 3)) > x[:, 4:].mean((1, 2, 3))).astype("int32")
    return x, y


def _callbacks(url, options):
    basis = {"val_loss": "min"}
    return [
        CkptCallback(url, basis, storage_options=options),
        TensorboardCallback(url, basis, image_shape=(8, 8, 3), storage_options=options),
        TFLiteCallback(url, basis, skip_from_start=2, frequency=2, storage_options=options),
    ]


def _scalar_steps(store, run, tmp_path):
    """The epoch_loss steps of one run, read by TensorBoard's reader from the objects."""
    local = tmp_path / run
    local.mkdir(parents=True, exist_ok=True)
    names = sorted(n for n in store.names() if "tfevents" in n)
    for name in names:
        store.fetch(name, local / name)
    events = EventAccumulator(str(local), size_guidance={"tensors": 0})
    events.Reload()
    return names, sorted(e.step for e in events.Tensors("epoch_loss"))


def test_a_run_and_its_resume_write_every_file_to_the_store(store, tiny_cnn, tmp_path):
    url, options = store
    x, y = _data()
    dev = _data(16, seed=1)
    first = TrainInfer(tiny_cnn(), log_dir=url, basis_dict={"val_loss": "min"})
    first.train((x, y), dev, 16, 4, callbacks=_callbacks(url, options), show_results=0)

    root = open_store(url, options)
    tb = root.child("tb")
    names, steps = _scalar_steps(tb.child("train"), "train", tmp_path / "a")
    assert steps == [0, 1, 2, 3]
    assert len(names) >= 4  # an event file per epoch: no object is ever appended to
    _, val_steps = _scalar_steps(tb.child("validation"), "validation", tmp_path / "a")
    assert val_steps == [0, 1, 2, 3]

    tflite = read_manifest(root.child("tflite"))
    assert tflite["artifacts"] and all(a["details"]["verified"] for a in tflite["artifacts"])
    assert {a["path"].rsplit("/", 1)[-1] for a in tflite["artifacts"]} <= root.child(
        "tflite").names()

    # a new process' view: resume from the store at epoch 4 up to 6
    model = tiny_cnn(seed=3)
    second = TrainInfer(model, log_dir=url, basis_dict={"val_loss": "min"})
    second.train((x, y), dev, 16, 6, callbacks=_callbacks(url, options), start_epoch=4,
                 show_results=0)
    assert second.run.restored_epoch == 4 and second.run.log_dir == url
    _, steps = _scalar_steps(tb.child("train"), "train", tmp_path / "b")
    assert steps == [0, 1, 2, 3, 4, 5]
    ckpt = read_manifest(root.child("ckpt"))
    assert ckpt["basis"]["best"]["val_loss"]["epoch"] >= 1
    assert "best_val_loss.keras" in root.child("ckpt").names()
    for folder in ("ckpt", "tb", "tflite"):
        assert not [n for n in root.child(folder).names() if n.startswith(".tmp-")]
    assert CkptCallback.restore(tiny_cnn(seed=5), url, storage_options=options) >= 1
