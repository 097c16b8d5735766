"""The pure-NumPy image rules: shapes, pixel ranges, labels, masks and the grid."""

from __future__ import annotations

import numpy as np
import pytest
from cvml_tb import images as img
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize(
    "given_shape, expected",
    [((8, 8), (8, 8, 1)), ([224, 224, 3], (224, 224, 3)), ((4, 6, 4), (4, 6, 4)), (None, None)],
)
def test_image_shape_accepts(given_shape, expected):
    assert img.check_image_shape(given_shape) == expected


@pytest.mark.parametrize("bad", [(8,), (8, 8, 2), (0, 8, 1), (8, 8, 1, 1), "8x8", (8.5, 8)])
def test_image_shape_rejects(bad):
    with pytest.raises(ValueError, match=r"image_shape.*Received: image_shape="):
        img.check_image_shape(bad)


def test_flat_inputs_are_reshaped_and_a_wrong_size_names_both_shapes():
    x = np.zeros((5, 64), "float32")
    assert img.display_images(x, (8, 8, 1)).shape == (5, 8, 8, 1)
    with pytest.raises(ValueError) as info:
        img.display_images(x, (224, 224, 3))
    message = str(info.value)
    assert "(224, 224, 3)" in message and "(64,)" in message


def test_unshaped_inputs_must_look_like_images():
    assert img.display_images(np.zeros((2, 5, 6)), None).shape == (2, 5, 6, 1)
    assert img.display_images(np.zeros((2, 5, 6, 3)), None).shape == (2, 5, 6, 3)
    with pytest.raises(ValueError, match=r"pass image_shape"):
        img.display_images(np.zeros((2, 64)), None)


def test_uint8_is_kept_and_unit_floats_are_scaled():
    u8 = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    assert img.to_uint8(u8) is u8
    unit = np.array([[[[0.0], [0.5]], [[1.0], [0.25]]]], "float32")
    assert img.to_uint8(unit).ravel().tolist() == [0, 128, 255, 64]


def test_other_float_ranges_are_min_max_normalised_per_image():
    x = np.stack([np.full((2, 2, 1), -3.0), np.full((2, 2, 1), 7.0)])
    x[0, 0, 0, 0], x[1, 1, 1, 0] = 5.0, 300.0  # two different ranges
    out = img.to_uint8(x)
    assert out.dtype == np.uint8
    for i in range(2):
        assert out[i].min() == 0 and out[i].max() == 255
    assert img.to_uint8(np.full((1, 2, 2, 1), 4.0)).max() == 0  # constant: no division by 0


@settings(max_examples=40, deadline=None)
@given(
    low=st.floats(-1e6, 1e6), span=st.floats(1e-3, 1e6),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
)
def test_any_float_range_maps_into_uint8(low, span, shape):
    rng = np.random.default_rng(0)
    x = (low + span * rng.random((*shape, 3))).astype("float64")
    out = img.to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == x.shape


def test_classification_labels_captions_and_frame_colours():
    images = np.zeros((3, 4, 4, 1), np.uint8)
    pred = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    samples = img.describe(images, pred, np.array([0, 0, 0]), class_names=["cat", "dog"])
    assert samples.colors == [img.GREEN, img.RED, img.GREEN]
    assert (samples.judged, samples.correct) == (3, 2)
    assert samples.captions[1] == ["pred dog (0.80)", "true cat"]
    assert not samples.segmentation
    assert "| 2 | dog (0.80) | cat | **no** |" in samples.table
    assert all(cell.shape == (4, 4, 3) for cell in samples.cells)
    one_hot = np.eye(2)[[0, 1, 0]]
    assert img.describe(images, pred, one_hot).colors == [img.GREEN, img.GREEN, img.GREEN]
    sigmoid = img.describe(images, np.array([[0.7], [0.2], [0.5]]), np.array([1, 0, 0]))
    assert sigmoid.colors == [img.GREEN, img.GREEN, img.RED]
    unlabelled = img.describe(images, pred, None)
    assert unlabelled.colors == [img.GREY] * 3 and unlabelled.judged == 0
    assert unlabelled.captions[0] == ["pred 0 (0.90)"]
    regression = img.describe(images, np.array([[1.5], [-2.25], [3.0]]), np.array([1.4, 2, 3]))
    assert regression.colors == [img.GREY] * 3
    assert regression.captions[0] == ["pred 1.5", "true 1.4"]


def test_segmentation_outputs_show_input_true_and_predicted_masks():
    images = np.full((2, 4, 6, 3), 200, np.uint8)
    pred = np.zeros((2, 4, 6, 3), "float32")
    pred[..., 2] = 1.0  # every pixel class 2
    true = np.full((2, 4, 6), 2)
    true[1] = 1
    samples = img.describe(images, pred, true)
    assert samples.segmentation
    assert samples.cells[0].shape == (4, 18, 3)  # input | true | predicted
    assert (samples.cells[0][:, 12:] == img.PALETTE[2]).all()
    assert (samples.cells[1][:, 6:12] == img.PALETTE[1]).all()
    assert samples.colors == [img.GREEN, img.RED]
    assert samples.captions[1] == ["input | true | predicted", "pixel accuracy 0.000"]
    assert "| 1 | 1.000 |" in samples.table and "| 2 | 0.000 |" in samples.table
    without_labels = img.describe(images, pred, None)
    assert without_labels.cells[0].shape == (4, 12, 3)


def test_pick_covers_the_classes_in_class_order():
    y = np.array([6, 6, 6, 6, 6, 1, 6, 3, 1, 6, 0, 3])  # mostly 6s first, as digits can be
    labels = img.class_indices(y)
    chosen = img.pick(labels, 5)
    assert y[chosen].tolist() == [0, 1, 1, 3, 6] and chosen == [10, 5, 8, 7, 0]
    assert img.pick(img.class_indices(np.eye(7)[y]), 4) == [10, 5, 7, 0]  # one-hot labels
    assert img.class_indices(y.astype("float32") + 0.5) is None  # not classes
    assert img.pick(None, 3) == [0, 1, 2]  # without class labels: the first
    assert img.class_indices(np.zeros((3, 4, 4))) is None  # masks are not classes


def test_pick_rotates_the_classes_when_there_are_more_than_cells():
    y = np.repeat(np.arange(10), 3)  # 10 classes, 3 samples each, 8 cells
    labels = img.class_indices(y)
    draws = [y[img.pick(labels, 8, draw)].tolist() for draw in range(3)]
    assert draws[0] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert draws[1] == [0, 1, 2, 3, 4, 5, 8, 9]  # classes 8, 9, 0..5, in class order
    assert set(draws[0]) | set(draws[1]) == set(range(10))
    for draw in range(10):  # always 8 different classes, every class within 2 draws
        both = y[img.pick(labels, 8, draw)].tolist() + y[img.pick(labels, 8, draw + 1)].tolist()
        assert len(set(both[:8])) == 8 and set(both) == set(range(10))
    # as many cells as classes or more: the same picks every draw
    assert img.pick(labels, 12, 0) == img.pick(labels, 12, 5)


def test_pick_shows_the_mistakes_first():
    y = np.repeat(np.arange(10), 3)
    labels = img.class_indices(y)
    predicted = list(labels)
    for index, wrong in ((29, 1), (4, 7), (14, 0)):  # a 9, a 1 and a 4 predicted wrong
        predicted[index] = wrong
    chosen = img.pick(labels, 8, 0, predicted)
    assert chosen[:3] == [4, 14, 29]  # the wrong ones first, in class order
    assert y[chosen].tolist() == [1, 4, 9, 0, 2, 3, 5, 6]  # then other classes
    assert len(set(chosen)) == 8
    # more mistakes than cells: they fill half the cells, spread over their classes
    all_wrong = [(label + 1) % 10 for label in labels]
    chosen = img.pick(labels, 5, 0, all_wrong)
    assert y[chosen].tolist() == [0, 1, 2, 3, 4] and chosen == [0, 3, 6, 9, 12]
    assert img.pick(labels, 5, 0, [0] * len(labels))[:3] == [3, 6, 9]  # all said 0
    # an unknown prediction (None) is not a mistake
    assert img.pick(labels, 3, 0, [None] * len(labels)) == img.pick(labels, 3, 0)
    assert img.predicted_classes(np.array([[0.1, 0.9], [0.8, 0.2]])) == [1, 0]
    assert img.predicted_classes(np.array([[0.7], [0.2]])) == [1, 0]  # a sigmoid


def test_text_picture_draws_each_line():
    picture = img.text_picture(["Best so far, after epoch 3:", "val_loss (min): 0.25 at epoch 3"])
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    assert picture.shape[0] >= 2 * img._line_height(14)
    dark = (picture.sum(axis=2) < 200).any(axis=1)
    half = picture.shape[0] // 2
    assert dark[:half].any() and dark[half:].any()  # ink on both rows


def test_grid_frames_captions_and_enlarges_small_cells():
    cells = [np.full((8, 8, 3), i * 30, np.uint8) for i in range(5)]
    colors = [img.RED, img.GREEN, img.GREY, img.GREEN, img.GREEN]
    captions = [[f"pred {i}", f"true {i}"] for i in range(5)]
    picture = img.grid(cells, colors, captions, header=["epoch 3 (step 2)", "2/5 correct"],
                       min_side=32)
    array = picture.array
    assert picture.scale == 4 and len(picture.boxes) == 5
    top, left, height, width = picture.boxes[1]
    assert (height, width) == (32, 32) and top > 0  # below the header line
    assert (array[top : top + 32, left : left + 32] == 30).all()  # the cell, enlarged
    assert tuple(array[top - 1, left - 1]) == img.GREEN  # its frame
    assert tuple(array[picture.boxes[0][0] - 1, picture.boxes[0][1]]) == img.RED
    # the caption strip under the cell is tinted like the frame and holds dark text
    strip = array[top + height : top + height + 20, left : left + width].reshape(-1, 3)
    colours = {tuple(int(v) for v in c) for c in strip}
    assert img.TINTS[img.GREEN] in colours and any(sum(c) < 200 for c in colours)
    # the header has text on white
    head = array[: picture.boxes[0][0] - img.BORDER].reshape(-1, 3)
    assert (head == 255).all(axis=1).mean() > 0.5 and (head.sum(axis=1) < 200).any()
    # rows of cells fill row-major
    assert picture.boxes[0][0] == picture.boxes[1][0] and picture.boxes[1][1] > left - 1


def test_long_captions_are_cut_to_the_cell():
    cells = [np.zeros((96, 96, 3), np.uint8)]
    picture = img.grid(cells, [img.GREEN], [["pred " + "golden retriever " * 5]])
    assert picture.array.shape[1] == 96 + 2 * img.BORDER  # the text did not widen it


def test_take_samples_from_arrays_and_batches():
    x = np.arange(40, dtype="float32").reshape(10, 4)
    y = np.arange(10)
    sx, sy = img.take_samples((x, y), 3)
    assert sx.shape == (3, 4) and sy.tolist() == [0, 1, 2]
    sx, sy = img.take_samples(x, 20)
    assert sx.shape == (10, 4) and sy is None
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 10, 4)]
    sx, sy = img.take_samples(batches, 6)
    assert sx.shape == (6, 4) and sy.tolist() == list(range(6))
    with pytest.raises(ValueError, match="sample_data"):
        img.take_samples({"a": x}, 3)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_encoding_round_trips_through_tensorflow(channels):
    import tensorflow as tf
    from cvml_tb import summaries

    rng = np.random.default_rng(channels)
    picture = rng.integers(0, 256, (5, 7, channels)).astype(np.uint8)
    decoded = tf.io.decode_png(summaries.encode_png(picture), channels=channels).numpy()
    np.testing.assert_array_equal(decoded, picture)
