"""``cvml_tb.events.EventWriter``: TensorBoard's own writer, read back with TensorBoard's reader."""

from __future__ import annotations

import numpy as np
import pytest
from cvml_tb import summaries
from cvml_tb.events import EventWriter
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util


def _events(folder):
    files = sorted(p for p in folder.iterdir() if "tfevents" in p.name)
    return files, [e for f in files for e in EventFileLoader(str(f)).Load()]


def test_nothing_written_opens_no_file(tmp_path):
    writer = EventWriter(tmp_path / "run")
    writer.write(0, summaries.scalars({}))
    writer.flush()
    writer.close()
    assert not (tmp_path / "run").exists()


def test_flush_makes_records_readable_before_close(tmp_path):
    writer = EventWriter(tmp_path / "run")
    writer.write(3, summaries.scalars({"epoch_loss": 0.5}))
    writer.flush()  # the callback flushes at every epoch end
    files, events = _events(tmp_path / "run")
    assert len(files) == 1 and files[0].name.startswith("events.out.tfevents.")
    assert events[0].file_version == "brain.Event:2"
    assert [(e.step, v.tag) for e in events[1:] for v in e.summary.value] == [(3, "epoch_loss")]
    writer.close()


def test_close_ends_the_file_and_later_writes_fail(tmp_path):
    writer = EventWriter(tmp_path / "run")
    for step in range(5):
        writer.write(step, summaries.scalars({"epoch_loss": 1.0 / (step + 1)}))
    writer.close()
    writer.close()  # twice: no-op
    with pytest.raises(ValueError, match="closed"):
        writer.write(5, summaries.scalars({"epoch_loss": 0.1}))
    acc = ea.EventAccumulator(str(tmp_path / "run"), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    got = [
        (e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
        for e in acc.Tensors("epoch_loss")
    ]
    assert got == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]


def test_a_record_cut_short_keeps_the_earlier_ones(tmp_path):
    writer = EventWriter(tmp_path / "run")
    writer.write(0, summaries.scalars({"a": 1.0}))
    writer.write(1, summaries.scalars({"a": 2.0}))
    writer.close()
    (path,), _ = _events(tmp_path / "run")
    path.write_bytes(path.read_bytes()[:-5])  # a crash mid-record
    _, events = _events(tmp_path / "run")
    assert [e.step for e in events if e.summary.value] == [0]


def test_image_text_and_histogram_read_back(tmp_path):
    picture = np.zeros((4, 6, 3), np.uint8)
    picture[:, :3] = 255
    values = np.linspace(-1, 1, 50)
    writer = EventWriter(tmp_path / "run")
    writer.write(2, summaries.merge(
        summaries.image("best/samples", picture),
        summaries.text("basis/best", "| a |"),
        summaries.histogram("dense/kernel/histogram", values),
    ))
    writer.close()
    acc = ea.EventAccumulator(str(tmp_path / "run"), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    assert set(acc.Tags()["tensors"]) == {"best/samples", "basis/best", "dense/kernel/histogram"}
    width, height, png = tensor_util.make_ndarray(acc.Tensors("best/samples")[0].tensor_proto)
    assert (width, height) == (b"6", b"4") and png.startswith(b"\x89PNG")
    buckets = tensor_util.make_ndarray(acc.Tensors("dense/kernel/histogram")[0].tensor_proto)
    assert buckets.shape == (30, 3) and buckets[:, 2].sum() == 50
    assert acc.Tensors("basis/best")[0].step == 2


def test_histogram_buckets_match_tf_summary(tmp_path):
    tf = pytest.importorskip("tensorflow")
    values = np.random.default_rng(0).normal(size=200).astype("float32")
    with tf.summary.create_file_writer(str(tmp_path / "tf")).as_default():
        tf.summary.histogram("h", values, step=0)
    writer = EventWriter(tmp_path / "pb")
    writer.write(0, summaries.histogram("h", values))
    writer.close()

    def buckets(folder):
        acc = ea.EventAccumulator(str(folder), size_guidance={ea.TENSORS: 0})
        acc.Reload()
        return tensor_util.make_ndarray(acc.Tensors("h")[0].tensor_proto)

    np.testing.assert_allclose(
        buckets(tmp_path / "pb"), buckets(tmp_path / "tf"), rtol=1e-5, atol=1e-6
    )
