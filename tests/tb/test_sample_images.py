"""Sample image grids written on improved epochs, decoded back from the event files."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cvml_tb import TensorboardCallback
from cvml_tb import images as img

import cvml_core
from cvml_core import plugins
from cvml_core.plugins import PluginSource, load_registry


class Recorder:
    def __init__(self):
        self.saved = []

    @cvml_core.hookimpl
    def cvml_artifact_saved(self, artifact):
        self.saved.append(artifact)


@pytest.fixture
def recorder():
    rec = Recorder()
    plugins._default = load_registry({}, [PluginSource("rec", "dist-rec", "1", module=rec)])
    return rec


def _decode(png_events):
    """The decoded picture of each image event: ``[(step, HxWx3 uint8), ...]``."""
    import tensorflow as tf

    out = []
    for step, value in png_events:
        width, height, png = value[0], value[1], value[2]
        picture = tf.io.decode_png(png).numpy()
        assert picture.shape[:2] == (int(height), int(width))
        out.append((step, picture))
    return out


def test_grid_on_first_and_improved_due_epochs(
    tmp_path, cnn, images_data, read_run, recorder
):
    x, y = images_data
    cb = TensorboardCallback(
        tmp_path, {"val_loss": "min"}, frequency=2, image_shape=(8, 8, 1),
        sample_data=(x[:10], y[:10]), max_images=6, class_names=["dark", "bright"],
    )
    assert cb.wants_sample_data
    history = cnn().fit(
        x, y, validation_data=(x[:16], y[:16]), epochs=5, batch_size=16, verbose=0,
        callbacks=[cb],
    ).history
    val_loss = history["val_loss"]
    expected = [1, 2] + ([4] if val_loss[3] < val_loss[1] else [])
    run = read_run(tmp_path / "tb" / "validation")
    assert [s for s, _ in run["samples/grid"]] == expected
    assert [s for s, _ in run["samples/labels"]] == expected

    tile = 64 + 2 * img.BORDER  # 8x8 enlarged x8, framed
    for _, picture in _decode(run["samples/grid"]):
        assert picture.shape == (2 * tile, 3 * tile, 3)  # 6 cells, 3 columns
        assert picture.std() > 10 and len(np.unique(picture)) > 50  # not blank
        corners = {tuple(picture[r * tile, c * tile]) for r in range(2) for c in range(3)}
        assert corners <= {img.GREEN, img.RED}
        # the first cell shows the first sample (grey, min-max kept since x is in [0, 1])
        cell = picture[img.BORDER : img.BORDER + 64 : 8, img.BORDER : img.BORDER + 64 : 8, 0]
        np.testing.assert_array_equal(cell, np.round(x[0].reshape(8, 8) * 255))
    table = run["samples/labels"][0][1]
    row = r"^\| \d \| (dark|bright) \(0\.\d\d\) \| (dark|bright) \|"
    assert len(re.findall(row, table, re.M)) == 6

    saved = [a for a in recorder.saved if a.kind == "tensorboard-images"]
    assert [a.epoch for a in saved] == expected
    assert saved[0].path == str(tmp_path / "tb" / "validation")
    assert saved[0].basis_key is None and saved[1].basis_key == "val_loss"
    assert saved[1].details["images"] == 6 and saved[1].details["tags"] == [
        "samples/grid", "samples/labels"
    ]


def test_segmentation_outputs_log_the_predicted_mask(tmp_path, read_run):
    import keras

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (12, 8, 8, 3)).astype("uint8")
    masks = (x[..., 0] > 127).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255),
         keras.layers.Conv2D(2, 3, padding="same", activation="softmax")]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    cb = TensorboardCallback(tmp_path, {"loss": "min"}, sample_data=(x, masks), max_images=4)
    model.fit(x, masks, epochs=2, batch_size=4, verbose=0, callbacks=[cb])

    run = read_run(tmp_path / "tb" / "validation")
    (step, picture), *_ = _decode(run["samples/grid"])
    tile_h, tile_w = 64 + 2 * img.BORDER, 3 * 64 + 2 * img.BORDER  # input | true | predicted
    assert step == 1 and picture.shape == (2 * tile_h, 2 * tile_w, 3)  # 2x2 cells
    b = img.BORDER
    shown = picture[b : b + 64 : 8, b : b + 64 : 8]
    np.testing.assert_array_equal(shown, x[0])  # uint8 input kept as is
    true_mask = picture[b : b + 64 : 8, b + 64 : b + 128 : 8]
    np.testing.assert_array_equal(true_mask, img.PALETTE[masks[0]])
    predicted = picture[b : b + 64 : 8, b + 128 : b + 192 : 8].reshape(-1, 3)
    assert {tuple(c) for c in predicted} <= {tuple(img.PALETTE[0]), tuple(img.PALETTE[1])}
    assert "pixel accuracy" in run["samples/labels"][0][1]


def test_traininfer_hands_over_the_dev_sample(tmp_path, cnn, images_data, read_run):
    from cvml_core.train import TrainInfer

    x, y = images_data
    cb = TensorboardCallback(tmp_path, {"val_loss": "min"}, image_shape=(8, 8), max_images=4)
    TrainInfer(cnn()).train(
        (x, y), (x[:16], y[:16]), batch_size=16, epochs=1, callbacks=[cb], show_results=0,
        log_dir=tmp_path,
    )
    np.testing.assert_array_equal(cb.sample_data[0][:4], x[:4])
    ((_, picture),) = _decode(read_run(tmp_path / "tb" / "validation")["samples/grid"])
    assert picture.shape[0] == 2 * (64 + 2 * img.BORDER)


def test_explicit_sample_data_wins_over_set_sample_data(tmp_path, images_data):
    x, y = images_data
    cb = TensorboardCallback(tmp_path, {"val_loss": "min"}, image_shape=(8, 8, 1),
                             sample_data=(x[:3], y[:3]))
    cb.set_sample_data(x[10:], y[10:])
    np.testing.assert_array_equal(cb.sample_data[0], x[:3])
    handed = TensorboardCallback(tmp_path / "b", {"val_loss": "min"}, image_shape=(8, 8, 1))
    handed.set_sample_data(x[10:], y[10:])
    np.testing.assert_array_equal(handed.sample_data[0], x[10:])


def test_image_shape_not_matching_the_samples_names_both_shapes(tmp_path, cnn, images_data):
    x, y = images_data
    with pytest.raises(ValueError) as info:
        TensorboardCallback(tmp_path, {"val_loss": "min"}, image_shape=(224, 224, 3),
                            sample_data=(x, y))
    assert "(224, 224, 3)" in str(info.value) and "(64,)" in str(info.value)

    # data handed over later is checked at on_train_begin, before any epoch runs
    cb = TensorboardCallback(tmp_path, {"val_loss": "min"}, image_shape=(7, 7, 1))
    cb.set_sample_data(x, y)
    with pytest.raises(ValueError, match=r"image_shape=\(7, 7, 1\).*\(64,\)"):
        cnn().fit(x, y, epochs=1, verbose=0, callbacks=[cb])


def test_no_sample_data_is_a_clear_error_at_train_begin(tmp_path, cnn, images_data):
    x, y = images_data
    cb = TensorboardCallback(tmp_path, {"val_loss": "min"}, image_shape=(8, 8, 1))

    model = cnn()
    with pytest.raises(ValueError, match=r"no sample data was given.*sample_data=\(x, y\)"):
        model.fit(x, y, validation_split=0.25, epochs=2, verbose=0, callbacks=[cb])
    assert int(model.optimizer.iterations) == 0  # failed before the first batch
    assert not (tmp_path / "tb" / "validation").exists()
    # scalars only: no sample data needed
    quiet = TensorboardCallback(tmp_path, {"val_loss": "min"}, image_shape=(8, 8, 1),
                                log_images=False)
    assert not quiet.wants_sample_data
    model.fit(x, y, validation_split=0.25, epochs=1, verbose=0, callbacks=[quiet])
