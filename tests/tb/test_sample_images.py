"""Sample image grids written on improved epochs, decoded back from the event files."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cvml_tb import TensorboardCallback
from cvml_tb import images as img

import cvml_core
from cvml_core.plugin_host import loader as plugins
from cvml_core.plugin_host.loader import PluginSource, load_registry


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


def _frame(picture, box):
    """The colour just outside a cell's image area (its frame)."""
    top, left, _, _ = box
    return tuple(int(v) for v in picture[top - 1, left - 1])


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
    # steps: 0-based epochs; due epochs 2 and 4 (1-based) are steps 1 and 3
    expected = [0, 1] + ([3] if val_loss[3] < val_loss[1] else [])
    run = read_run(tmp_path / "tb" / "validation")
    assert [s for s, _ in run["best/samples"]] == expected
    assert [s for s, _ in run["samples/labels"]] == expected

    saved = [a for a in recorder.saved if a.kind == "tensorboard-images"]
    assert [a.details["step"] for a in saved] == expected
    assert [a.epoch for a in saved] == [s + 1 for s in expected]
    boxes = saved[0].details["cells"]
    assert len(boxes) == 6 and all(b[2:] == [96, 96] for b in boxes)  # 8x8 enlarged x12
    # each cell is one of the 10 samples, each shown once; the model's mistakes first
    for (step, picture), artifact in zip(_decode(run["best/samples"]), saved, strict=True):
        assert step == artifact.details["step"]
        assert list(picture.shape[:2]) == artifact.details["size"]
        frames = [_frame(picture, box) for box in boxes]
        assert set(frames) <= {img.GREEN, img.RED}
        assert frames.count(img.GREEN) == artifact.details["correct"]
        assert frames == sorted(frames, key=lambda color: color != img.RED)
        shown = []
        for top, left, height, width in boxes:
            cell = picture[top : top + height : 12, left : left + width : 12, 0]
            matches = [i for i in range(10)
                       if np.array_equal(cell, np.round(x[i].reshape(8, 8) * 255))]
            assert len(matches) == 1
            shown += matches
        assert len(set(shown)) == 6
        assert len(np.unique(picture[: boxes[0][0] - img.BORDER])) > 2  # the header line
    labels = dict(run["samples/labels"])
    assert labels[0].startswith("epoch 1 (step 0) - first epoch of this fit - ")
    # epoch 2: the first due epoch, the first best (nothing came before it)
    assert labels[1].startswith("epoch 2 (step 1) - first best of val_loss - ")
    if 3 in labels:
        assert labels[3].startswith("epoch 4 (step 3) - improved: val_loss - ")
    row = r"^\| \d \| (dark|bright) \(0\.\d\d\) \| (dark|bright) \| (yes|\*\*no\*\*) \|"
    rows = re.findall(row, labels[0], re.M)
    assert len(rows) == 6 and {true for _, true, _ in rows} == {"dark", "bright"}
    marks = [mark for _, _, mark in rows]
    assert marks == sorted(marks, key=lambda mark: mark != "**no**")  # mistakes first

    assert saved[0].path == str(tmp_path / "tb" / "validation")
    assert saved[0].basis_key is None and saved[1].basis_key == "val_loss"
    assert saved[1].details["images"] == 6 and saved[1].details["tags"] == [
        "best/samples", "samples/labels"
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
    (step, picture), *_ = _decode(run["best/samples"])
    artifact = cb.manifest.artifacts[0]
    assert step == 0 and artifact["details"]["segmentation"]
    top, left, height, width = artifact["details"]["cells"][0]  # the first of 4 cells
    assert (height, width) == (96, 3 * 96)  # input | true | predicted, each 8x8 x12
    shown = picture[top : top + 96 : 12, left : left + 96 : 12]
    np.testing.assert_array_equal(shown, x[0])  # uint8 input kept as is; masks: first 4
    true_mask = picture[top : top + 96 : 12, left + 96 : left + 192 : 12]
    np.testing.assert_array_equal(true_mask, img.PALETTE[masks[0]])
    predicted = picture[top : top + 96 : 12, left + 192 : left + 288 : 12].reshape(-1, 3)
    assert {tuple(c) for c in predicted} <= {tuple(img.PALETTE[0]), tuple(img.PALETTE[1])}
    assert "pixel accuracy" in run["samples/labels"][0][1]


def test_traininfer_hands_over_the_dev_sample(tmp_path, cnn, images_data, read_run):
    from cvml_core.train.train_infer import TrainInfer

    x, y = images_data
    cb = TensorboardCallback(tmp_path, {"val_loss": "min"}, image_shape=(8, 8), max_images=4)
    TrainInfer(cnn()).train(
        (x, y), (x[:16], y[:16]), batch_size=16, epochs=1, callbacks=[cb], show_results=0,
        log_dir=tmp_path,
    )
    np.testing.assert_array_equal(cb.sample_data[0][:4], x[:4])
    ((_, picture),) = _decode(read_run(tmp_path / "tb" / "validation")["best/samples"])
    assert len(cb.manifest.artifacts[0]["details"]["cells"]) == 4
    table = read_run(tmp_path / "tb" / "validation")["samples/labels"][0][1]
    trues = [line.split("|")[3].strip() for line in table.splitlines()[-4:]]
    assert set(trues) == {"0", "1"}  # both classes, whatever the order of the dev set


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


def test_plain_fit_without_sample_data_writes_scalars_and_warns_once(
    tmp_path, cnn, images_data, read_run
):
    x, y = images_data
    # the seed's constructor in a plain model.fit: no sample data can reach the callback
    cb = TensorboardCallback(tmp_path, {"val_loss": "min"}, image_shape=(8, 8, 1))
    model = cnn()
    with pytest.warns(UserWarning, match=r"no sample data.*sample_data=\(x, y\).*TrainInfer"):
        model.fit(x, y, validation_split=0.25, epochs=2, verbose=0, callbacks=[cb])
    val = read_run(tmp_path / "tb" / "validation")
    assert [s for s, _ in val["epoch_loss"]] == [0, 1]
    assert "best/samples" not in val
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*no sample data")  # once per callback
        model.fit(x, y, validation_split=0.25, epochs=1, verbose=0, callbacks=[cb])
    # scalars only on purpose: no warning
    quiet = TensorboardCallback(tmp_path / "q", {"val_loss": "min"}, image_shape=(8, 8, 1),
                                log_images=False)
    assert not quiet.wants_sample_data
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*no sample data")
        model.fit(x, y, validation_split=0.25, epochs=1, verbose=0, callbacks=[quiet])


def test_every_class_appears_across_pictures_and_mistakes_come_first(tmp_path, read_run):
    """10 classes, 4 cells: the classes rotate from picture to picture in real training."""
    import keras

    rng = np.random.default_rng(3)
    y = np.tile(np.arange(10), 6)
    x = rng.random((60, 64)).astype("float32") * 0.2
    x[np.arange(60), y * 6] += 1.0  # class c: a bright pixel at 6c
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    cb = TensorboardCallback(tmp_path, {"loss": "min"}, image_shape=(8, 8), max_images=4,
                             sample_data=(x, y))
    model.fit(x, y, epochs=8, batch_size=10, verbose=0, callbacks=[cb])

    tables = [text for _, text in read_run(tmp_path / "tb" / "validation")["samples/labels"]]
    assert len(tables) >= 4
    shown = set()
    for table in tables:
        rows = re.findall(r"^\| \d \| \d \(\d\.\d\d\) \| (\d) \| (yes|\*\*no\*\*) \|", table, re.M)
        assert len(rows) == 4
        marks = [mark for _, mark in rows]
        assert marks == sorted(marks, key=lambda mark: mark != "**no**")  # mistakes first
        shown |= {int(true) for true, _ in rows}
    assert shown == set(range(10))
