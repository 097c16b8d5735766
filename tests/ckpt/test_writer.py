"""The file writer: Keras' formats byte for byte where it matters, valid zips, CRC maths."""

from __future__ import annotations

import zipfile
import zlib

import h5py
import numpy as np
from cvml_ckpt.snapshot import Snapshotter
from cvml_ckpt.writer import check_file, crc32_combine, read_tags, write_snapshot
from hypothesis import given
from hypothesis import strategies as st

from cvml_core.keras_compat import keras


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_crc32_combine_matches_zlib(a, b):
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def lookup_model():
    """A model with an asset (an adapted vocabulary) and a kernel over 1 MiB."""
    keras.utils.set_random_seed(0)
    lookup = keras.layers.StringLookup()
    lookup.adapt(np.array([f"word{i}" for i in range(700)]))
    model = keras.Sequential([
        keras.Input((1,), dtype="string"),
        lookup,
        keras.layers.Embedding(lookup.vocabulary_size(), 512),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(np.array([["word1"], ["word2"]]), np.array([0, 1]))
    return model


def test_keras_file_is_a_valid_zip_that_load_model_reads(tmp_path):
    model = lookup_model()
    snapshotter = Snapshotter()
    snapshotter.recycle(snapshotter.take(model))  # the second take replays the walk
    snapshot = snapshotter.take(model)
    snapshot.tags = {"epoch": 3}
    path = tmp_path / "m.keras"
    write_snapshot(snapshot, path)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every member's CRC checks
        names = archive.namelist()
    assert {"model.weights.h5", "metadata.json", "config.json"} <= set(names)
    assert any(n.startswith("assets/") for n in names)
    loaded = keras.models.load_model(path)
    for got, want in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert loaded.layers[0].get_vocabulary() == model.layers[0].get_vocabulary()
    assert read_tags(path) == {"epoch": 3}
    assert check_file(path, snapshot) is None


def test_check_file_names_what_does_not_read_back(tmp_path, tiny_model, tiny_data):
    model = tiny_model()
    model.fit(*tiny_data, epochs=1, verbose=0)
    snapshot = Snapshotter().take(model)
    write_snapshot(snapshot, tmp_path / "m.keras")
    write_snapshot(snapshot, tmp_path / "m.weights.h5")
    assert check_file(tmp_path / "m.keras", snapshot) is None
    assert check_file(tmp_path / "m.weights.h5", snapshot) is None
    entry = next(e for e in snapshot.entries if e.values)
    key = next(iter(entry.values))
    entry.values[key] = entry.values[key].reshape(-1)[:1]  # as if written with another shape
    for name in ("m.keras", "m.weights.h5"):
        problem = check_file(tmp_path / name, snapshot)
        assert problem is not None and f"{entry.path}/vars/{key}" in problem
    snapshot.config_json = "{}"
    assert "config.json" in check_file(tmp_path / "m.keras", snapshot)
    (tmp_path / "torn.keras").write_bytes((tmp_path / "m.keras").read_bytes()[:-100])
    assert "reading it back failed" in check_file(tmp_path / "torn.keras", snapshot)


def h5_layout(path):
    found = []
    with h5py.File(path, "r") as h5:
        h5.visititems(
            lambda name, obj: found.append((name, dict(obj.attrs), getattr(obj, "shape", None)))
        )
    return found


def test_weights_file_has_the_layout_of_save_weights(tmp_path, tiny_model, tiny_data):
    model = tiny_model()
    model.fit(*tiny_data, epochs=1, verbose=0)
    model.save_weights(tmp_path / "keras.weights.h5")
    write_snapshot(Snapshotter().take(model, full=False), tmp_path / "ours.weights.h5")
    assert h5_layout(tmp_path / "ours.weights.h5") == h5_layout(tmp_path / "keras.weights.h5")


def test_a_snapshot_taken_before_the_optimizer_is_built_is_followed_by_a_full_one(
    tmp_path, tiny_model, tiny_data
):
    model = tiny_model()
    snapshotter = Snapshotter()
    before = snapshotter.take(model)
    model.fit(*tiny_data, epochs=1, verbose=0)
    after = snapshotter.take(model)
    optimizer_values = {e.path: len(e.values) for e in after.entries}["optimizer"]
    assert optimizer_values == len(model.optimizer.variables) > 2
    assert len(after.entries) >= len(before.entries)
    write_snapshot(after, tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    for got, want in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
