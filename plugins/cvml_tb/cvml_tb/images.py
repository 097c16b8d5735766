"""Sample images for TensorBoard: inputs, predictions and labels as one RGB grid.

Pure NumPy (no TensorFlow import), so every rule here is cheap to test:

* :func:`check_image_shape` / :func:`display_images` turn model inputs into
  ``(N, H, W, C)`` images, reshaping flat inputs to ``image_shape``.
* :func:`to_uint8` maps pixel values to 0..255: uint8 as is, floats in [0, 1]
  scaled by 255, any other range min-max normalised per image.
* :func:`describe` reads predictions (and true labels) as class labels or, for
  segmentation-shaped outputs, as per-pixel class maps (:func:`colorize`).
* :func:`grid` tiles the cells row-major, with a border per cell: green when the
  prediction matches the label, red when not, grey when unknown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CHANNELS = (1, 3, 4)
BORDER = 2
MIN_SIDE = 64
GREEN = (40, 200, 40)
RED = (220, 40, 40)
GREY = (128, 128, 128)
# A fixed palette for class maps; class 0 (usually background) is black.
PALETTE = np.array(
    [
        (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
        (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
        (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
        (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
    ],
    dtype=np.uint8,
)


def to_numpy(value: Any) -> np.ndarray:
    """A NumPy array from an array, a tensor or a nested list."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def check_image_shape(image_shape: Any) -> tuple[int, int, int] | None:
    """Validate ``image_shape`` = (H, W) or (H, W, C) with C in 1/3/4; None stays None."""
    if image_shape is None:
        return None
    try:
        dims = tuple(int(d) for d in image_shape)
        ok = all(int(d) == d for d in image_shape)
    except (TypeError, ValueError):
        dims, ok = (), False
    if not ok or len(dims) not in (2, 3) or min(dims) < 1 or (
        len(dims) == 3 and dims[2] not in CHANNELS
    ):
        raise ValueError(
            "image_shape must be (height, width) or (height, width, channels) with "
            f"positive sizes and channels 1, 3 or 4. Received: image_shape={image_shape!r}"
        )
    if len(dims) == 2:
        dims = (dims[0], dims[1], 1)
    return (dims[0], dims[1], dims[2])


def display_images(x: np.ndarray, image_shape: tuple[int, int, int] | None) -> np.ndarray:
    """The sample inputs ``x`` (N, ...) as images (N, H, W, C); raises ``ValueError``."""
    x = np.asarray(x)
    per_sample = tuple(x.shape[1:])
    if image_shape is not None:
        if math.prod(per_sample) != math.prod(image_shape):
            raise ValueError(
                f"image_shape={tuple(image_shape)} ({math.prod(image_shape)} values) does "
                f"not match the sample inputs' shape {per_sample} per sample "
                f"({math.prod(per_sample)} values); set image_shape to the shape the "
                "inputs reshape to, e.g. (height, width, channels). "
                f"Received: image_shape={tuple(image_shape)}, sample input shape={per_sample}"
            )
        return x.reshape((x.shape[0], *image_shape))
    if len(per_sample) == 2:
        return x[..., np.newaxis]
    if len(per_sample) == 3 and per_sample[2] in CHANNELS:
        return x
    raise ValueError(
        f"the sample inputs have shape {per_sample} per sample, which is not an image "
        "(height, width[, channels 1/3/4]); pass image_shape=(height, width, channels) "
        f"to reshape them. Received: image_shape=None, sample input shape={per_sample}"
    )


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pixel values as uint8: uint8 kept, [0, 1] floats x255, other ranges min-max per image."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * 255
    values = np.nan_to_num(images.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if np.issubdtype(images.dtype, np.integer) and values.min() >= 0 and values.max() <= 255:
        return values.astype(np.uint8)
    if np.issubdtype(images.dtype, np.floating) and values.min() >= 0 and values.max() <= 1:
        return np.round(values * 255).astype(np.uint8)
    axes = tuple(range(1, values.ndim))
    low = values.min(axis=axes, keepdims=True)
    span = values.max(axis=axes, keepdims=True) - low
    scaled = np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.0)
    return np.round(scaled * 255).astype(np.uint8)


def to_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) with C 1/3/4 as (N, H, W, 3): grey repeated, alpha dropped."""
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    return images[..., :3]


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class maps (N, H, W) of ints as RGB (N, H, W, 3) with the fixed palette."""
    return PALETTE[np.asarray(mask, dtype=np.int64) % len(PALETTE)]


def is_segmentation(pred: np.ndarray, image_hw: tuple[int, int]) -> bool:
    """Whether predictions are per-pixel class maps: (N, H, W, K) with the image's H, W."""
    return pred.ndim == 4 and tuple(pred.shape[1:3]) == tuple(image_hw)


def _class_map(values: np.ndarray) -> np.ndarray:
    """(N, H, W, K) scores -> (N, H, W) classes; (N, H, W[, 1]) ints or probabilities too."""
    if values.ndim == 4 and values.shape[-1] > 1:
        return values.argmax(axis=-1)
    if values.ndim == 4:
        values = values[..., 0]
    if np.issubdtype(values.dtype, np.floating) and not np.all(values == np.round(values)):
        threshold = 0.5 if values.min() >= 0 and values.max() <= 1 else 0.0
        return (values >= threshold).astype(np.int64)
    return values.astype(np.int64)


def _labels(
    values: np.ndarray | None, n: int, scores: bool = True
) -> tuple[list[Any], list[str]]:
    """Per-sample labels (ints when discrete, else None) and their texts.

    With ``scores``, a predicted class shows its score: ``3 (0.91)``.
    """
    if values is None:
        return [None] * n, [""] * n
    values = np.asarray(values)[:n]
    if values.ndim >= 2 and values.shape[-1] > 1:
        flat = values.reshape(len(values), -1)
        labels = [int(v) for v in flat.argmax(axis=1)]
        if not scores:
            return labels, [str(v) for v in labels]
        return labels, [f"{v} ({flat[i].max():.2f})" for i, v in enumerate(labels)]
    flat = values.reshape(len(values))
    if np.issubdtype(flat.dtype, np.integer) or np.issubdtype(flat.dtype, np.bool_):
        return [int(v) for v in flat], [str(int(v)) for v in flat]
    if np.all(flat == np.round(flat)):
        return [int(v) for v in flat], [str(int(v)) for v in flat]
    if flat.min() >= 0 and flat.max() <= 1:  # one sigmoid probability
        labels = [int(v >= 0.5) for v in flat]
        if not scores:
            return labels, [str(v) for v in labels]
        return labels, [f"{label} ({v:.2f})" for label, v in zip(labels, flat, strict=True)]
    return [None] * len(flat), [f"{v:.4g}" for v in flat]


@dataclass
class Samples:
    """What one image summary shows: grid cells, border colours and a Markdown table."""

    cells: list[np.ndarray]
    colors: list[tuple[int, int, int]]
    table: str
    segmentation: bool


def _name(label: Any, text: str, class_names: Sequence[str] | None) -> str:
    if class_names is not None and isinstance(label, int) and 0 <= label < len(class_names):
        _, _, score = text.partition(" ")  # "3 (0.91)" -> "dog (0.91)"
        return f"{class_names[label]} {score}".strip()
    return text


def describe(
    images: np.ndarray,
    pred: Any,
    y_true: Any = None,
    class_names: Sequence[str] | None = None,
) -> Samples:
    """Cells and a label table for ``images`` (uint8 N, H, W, C) and model outputs ``pred``.

    Classification: one cell per image, predicted and true labels in the table.
    Segmentation (outputs (N, H, W, K) at the image's size): each cell is the input,
    the true mask (if labels are class maps) and the predicted mask side by side.
    """
    n = len(images)
    pred = to_numpy(pred)[:n]
    y = None if y_true is None else to_numpy(y_true)[:n]
    rgb = to_rgb(images)
    if is_segmentation(pred, images.shape[1:3]):
        pred_map = _class_map(pred)
        true_map = None
        if y is not None and y.ndim in (3, 4) and tuple(y.shape[1:3]) == images.shape[1:3]:
            true_map = _class_map(y)
        cells, colors, rows = [], [], []
        for i in range(n):
            parts = [rgb[i]]
            if true_map is not None:
                parts.append(colorize(true_map[i]))
            parts.append(colorize(pred_map[i]))
            cells.append(np.concatenate(parts, axis=1))
            classes = ", ".join(
                _name(int(c), str(int(c)), class_names) for c in np.unique(pred_map[i])
            )
            if true_map is not None:
                accuracy = float((pred_map[i] == true_map[i]).mean())
                colors.append(GREEN if accuracy >= 0.5 else RED)
                rows.append(f"| {i} | {accuracy:.3f} | {classes} |")
            else:
                colors.append(GREY)
                rows.append(f"| {i} | | {classes} |")
        layout = "input | true mask | predicted mask" if true_map is not None else (
            "input | predicted mask"
        )
        table = "\n".join(
            [
                f"Cells, row-major: {layout}.",
                "",
                "| # | pixel accuracy | predicted classes |",
                "|---|---|---|",
                *rows,
            ]
        )
        return Samples(cells, colors, table, segmentation=True)
    pred_labels, pred_texts = _labels(pred, n)
    true_labels, true_texts = _labels(y, n, scores=False)
    colors = []
    rows = []
    for i in range(n):
        if pred_labels[i] is None or true_labels[i] is None:
            colors.append(GREY)
            mark = ""
        elif pred_labels[i] == true_labels[i]:
            colors.append(GREEN)
            mark = "yes"
        else:
            colors.append(RED)
            mark = "**no**"
        rows.append(
            f"| {i} | {_name(pred_labels[i], pred_texts[i], class_names)} | "
            f"{_name(true_labels[i], true_texts[i], class_names)} | {mark} |"
        )
    table = "\n".join(
        [
            "Cells, row-major. Border: green = correct, red = wrong.",
            "",
            "| # | predicted | true | correct |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    return Samples([rgb[i] for i in range(n)], colors, table, segmentation=False)


def grid(
    cells: Sequence[np.ndarray],
    colors: Sequence[tuple[int, int, int]],
    min_side: int = MIN_SIDE,
) -> np.ndarray:
    """Tile same-sized RGB cells row-major, each framed in its colour; (H, W, 3) uint8.

    Cells smaller than ``min_side`` pixels high are enlarged by an integer factor
    (nearest neighbour), so 8x8 digits stay visible in TensorBoard.
    """
    if not cells:
        raise ValueError("grid needs at least one cell")
    factor = max(1, math.ceil(min_side / cells[0].shape[0]))
    if factor > 1:
        cells = [np.repeat(np.repeat(c, factor, axis=0), factor, axis=1) for c in cells]
    height, width = cells[0].shape[:2]
    h, w = height + 2 * BORDER, width + 2 * BORDER
    columns = max(1, min(len(cells), math.ceil(math.sqrt(len(cells) * h / w))))
    rows = math.ceil(len(cells) / columns)
    canvas = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for index, (cell, color) in enumerate(zip(cells, colors, strict=True)):
        top, left = (index // columns) * h, (index % columns) * w
        canvas[top : top + h, left : left + w] = color
        canvas[top + BORDER : top + BORDER + height, left + BORDER : left + BORDER + width] = cell
    return canvas


def take_samples(sample_data: Any, max_images: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The first ``max_images`` inputs (and labels) of ``sample_data`` as NumPy arrays.

    ``sample_data`` is ``(x, y)``, ``(x,)``, ``x``, or an iterable of such batches (a
    ``tf.data.Dataset``); ``y`` may be None. Only single-input models are supported.
    """
    if isinstance(sample_data, (tuple, list)) and len(sample_data) in (1, 2):
        x, y = sample_data[0], (sample_data[1] if len(sample_data) == 2 else None)
        if x is not None and not (isinstance(x, (tuple, list, dict))):
            x = to_numpy(x)[:max_images]
            return x, None if y is None else to_numpy(y)[:max_images]
    elif hasattr(sample_data, "shape") or isinstance(sample_data, np.ndarray):
        return to_numpy(sample_data)[:max_images], None
    elif hasattr(sample_data, "__iter__") and not isinstance(sample_data, (str, bytes, dict)):
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        count = 0
        for batch in sample_data:
            bx, by = (batch[0], batch[1] if len(batch) > 1 else None) if isinstance(
                batch, (tuple, list)
            ) else (batch, None)
            bx = to_numpy(bx)
            xs.append(bx)
            if by is not None:
                ys.append(to_numpy(by))
            count += len(bx)
            if count >= max_images:
                break
        if xs:
            x = np.concatenate(xs)[:max_images]
            y = np.concatenate(ys)[:max_images] if len(ys) == len(xs) else None
            return x, y
    raise ValueError(
        "sample_data must be (x, y), x, or a dataset of (x, y) batches, with x one array "
        f"of inputs (single-input models). Received: sample_data of type "
        f"{type(sample_data).__name__}"
    )
