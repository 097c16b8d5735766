"""Sample images for TensorBoard: inputs with their predicted and true labels, as one picture.

NumPy and Pillow only (no TensorFlow import), so every rule here is cheap to test:

* :func:`check_image_shape` / :func:`display_images` turn model inputs into
  ``(N, H, W, C)`` images, reshaping flat inputs to ``image_shape``.
* :func:`to_uint8` maps pixel values to 0..255: uint8 as is, floats in [0, 1]
  scaled by 255, any other range min-max normalised per image.
* :func:`pick` picks the samples to show: the model's mistakes first, then samples
  that cover the classes, rotating through them when there are more classes than cells.
* :func:`describe` reads predictions (and true labels) as class labels or, for
  segmentation-shaped outputs, as per-pixel class maps (:func:`colorize`), and
  writes each cell's caption.
* :func:`grid` draws the picture: a header line with the step's facts, then the
  cells row-major, each framed and captioned in green when the prediction matches
  the label, red when not, grey when unknown.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CHANNELS = (1, 3, 4)
BORDER = 3  # the coloured frame of a cell, in pixels
GAP = 4  # white space between cells
PAD = 3  # text padding inside a caption strip or the header
MIN_SIDE = 96  # small images are enlarged by an integer factor to at least this height
# TensorBoard's image cards are about 350 pixels wide and scale wider pictures down
# (blurring the captions): grids of small cells stay within this width.
MAX_WIDTH = 340
GREEN = (40, 170, 40)
RED = (215, 40, 40)
GREY = (140, 140, 140)
# The caption strip under a cell: a light tint of its frame colour, dark text.
TINTS = {GREEN: (222, 245, 222), RED: (253, 224, 224), GREY: (236, 236, 236)}
TEXT = (20, 20, 20)
WRONG_TEXT = (170, 0, 0)  # a red cell's first caption line (the wrong prediction)
WHITE = (255, 255, 255)
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




def class_indices(y: Any) -> list[int] | None:
    """Each sample's class index when ``y`` holds classification labels, else None.

    Class indices ``(N,)`` / ``(N, 1)`` (integers, or floats with integer values) and
    one-hot or probability rows ``(N, K)`` are labels; anything else (regression
    values, masks) is not.
    """
    if y is None:
        return None
    y = to_numpy(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return [int(v) for v in y.argmax(axis=1)]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not (
        np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.bool_)
    ):
        return None
    if np.issubdtype(y.dtype, np.floating) and not np.all(y == np.round(y)):
        return None
    return [int(v) for v in y]


def predicted_classes(pred: Any) -> list[int | None]:
    """Each sample's predicted class (argmax of ``(N, K)``, 0/1 of a sigmoid), else None."""
    pred = to_numpy(pred)
    return _labels(pred, len(pred))[0]


def pick(
    labels: Sequence[int] | None,
    n: int,
    draw: int = 0,
    predicted: Sequence[int | None] | None = None,
) -> list[int]:
    """The indices of the ``n`` samples to show on the ``draw``-th picture (0-based).

    Without class ``labels``: the first ``n``. With them, first the samples the model
    got wrong (``predicted`` differs from the label; at most half the cells, spread
    over their classes), then samples that cover the classes: round-robin over the
    classes (the first sample of each class, then the second of each, ...), classes
    the mistakes do not show first. When ``n`` is smaller than the number of classes,
    the classes start ``n`` further at each draw, so that without mistakes every class
    is shown within ceil(classes / n) draws. Shown: the wrong ones, then the right
    ones, each in class order.
    """
    if labels is None:
        return list(range(n))
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    classes = sorted(by_class)
    if 0 < n < len(classes):
        start = (draw * n) % len(classes)
        classes = classes[start:] + classes[:start]

    def round_robin(groups: dict[int, list[int]], order: list[int]) -> list[int]:
        out = []
        for rank in range(max((len(v) for v in groups.values()), default=0)):
            out += [groups[c][rank] for c in order if c in groups and rank < len(groups[c])]
        return out

    wrong: dict[int, list[int]] = {}
    if predicted is not None:
        for index, label in enumerate(labels):
            if predicted[index] is not None and predicted[index] != label:
                wrong.setdefault(label, []).append(index)
    mistakes = round_robin(wrong, classes)[: (n + 1) // 2]
    taken = set(mistakes)
    shown = {labels[i] for i in mistakes}  # their classes come last in the rest
    order = [c for c in classes if c not in shown] + [c for c in classes if c in shown]
    left = {c: [i for i in v if i not in taken] for c, v in by_class.items()}
    rest = round_robin(left, order)[: n - len(mistakes)]

    def right(i: int) -> bool:
        return predicted is None or predicted[i] is None or predicted[i] == labels[i]

    return sorted(mistakes + rest, key=lambda i: (right(i), labels[i], i))


@dataclass
class Samples:
    """What one image summary shows: cells, their frame colours, captions, a table."""

    cells: list[np.ndarray]
    colors: list[tuple[int, int, int]]
    captions: list[list[str]]
    table: str
    segmentation: bool
    #: how many cells have a known right or wrong answer, and how many are right
    judged: int = 0
    correct: int = 0
    layout: str = field(default="")


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
    """Cells, captions and a label table for ``images`` (uint8 N, H, W, C) and outputs ``pred``.

    Classification: one cell per image, captioned ``pred <class> (<score>)`` and
    ``true <class>``. Segmentation (outputs (N, H, W, K) at the image's size): each
    cell is the input, the true mask (if labels are class maps) and the predicted
    mask side by side, captioned with the pixel accuracy.
    """
    n = len(images)
    pred = to_numpy(pred)[:n]
    y = None if y_true is None else to_numpy(y_true)[:n]
    rgb = to_rgb(images)
    if is_segmentation(pred, images.shape[1:3]):
        return _describe_segmentation(rgb, pred, y, class_names)
    pred_labels, pred_texts = _labels(pred, n)
    true_labels, true_texts = _labels(y, n, scores=False)
    colors, rows, captions = [], [], []
    judged = correct = 0
    for i in range(n):
        predicted = _name(pred_labels[i], pred_texts[i], class_names)
        true = _name(true_labels[i], true_texts[i], class_names)
        if pred_labels[i] is None or true_labels[i] is None:
            colors.append(GREY)
            mark = ""
        elif pred_labels[i] == true_labels[i]:
            colors.append(GREEN)
            mark = "yes"
            judged, correct = judged + 1, correct + 1
        else:
            colors.append(RED)
            mark = "**no**"
            judged += 1
        captions.append([f"pred {predicted}"] + ([f"true {true}"] if y is not None else []))
        rows.append(f"| {i + 1} | {predicted} | {true} | {mark} |")
    table = "\n".join(
        [
            "| cell | predicted | true | correct |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    return Samples(
        [rgb[i] for i in range(n)], colors, captions, table, segmentation=False,
        judged=judged, correct=correct, layout="input",
    )


def _describe_segmentation(
    rgb: np.ndarray, pred: np.ndarray, y: np.ndarray | None, class_names: Sequence[str] | None
) -> Samples:
    n = len(rgb)
    pred_map = _class_map(pred)
    true_map = None
    if y is not None and y.ndim in (3, 4) and tuple(y.shape[1:3]) == rgb.shape[1:3]:
        true_map = _class_map(y)
    cells, colors, rows, captions = [], [], [], []
    judged = correct = 0
    layout = "input | true | predicted" if true_map is not None else "input | predicted"
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
            good = accuracy >= 0.5
            colors.append(GREEN if good else RED)
            judged, correct = judged + 1, correct + int(good)
            captions.append([layout, f"pixel accuracy {accuracy:.3f}"])
            rows.append(f"| {i + 1} | {accuracy:.3f} | {classes} |")
        else:
            colors.append(GREY)
            captions.append([layout, f"classes {classes}"])
            rows.append(f"| {i + 1} | | {classes} |")
    table = "\n".join(
        [
            f"Each cell: {layout}.",
            "",
            "| cell | pixel accuracy | predicted classes |",
            "|---|---|---|",
            *rows,
        ]
    )
    return Samples(
        cells, colors, captions, table, segmentation=True, judged=judged, correct=correct,
        layout=layout,
    )


# -- drawing -----------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def font(size: int) -> Any:
    """Pillow's bundled font at ``size`` pixels (its bitmap font without FreeType)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


@functools.lru_cache(maxsize=8)
def _line_height(size: int) -> int:
    return int(font(size).getbbox("Ag(0|")[3]) + 2


@functools.lru_cache(maxsize=1024)
def _glyph(size: int, char: str) -> tuple[np.ndarray, float]:
    """A character's coverage mask (line height x drawn width) and its advance, in pixels.

    Text is drawn glyph by glyph from this cache, so the captions that change every
    epoch (the scores) cost no font rendering once their characters were seen.
    """
    from PIL import Image, ImageDraw

    face = font(size)
    height = _line_height(size)
    width = int(math.ceil(face.getbbox(char)[2])) if char.strip() else 0
    mask = np.zeros((height, max(width, 1)), np.uint8)
    if width > 0:
        image = Image.new("L", (width, height), 0)
        ImageDraw.Draw(image).text((0, 0), char, fill=255, font=face)
        mask = np.asarray(image)
    return mask, float(face.getlength(char))


def text_width(size: int, text: str) -> int:
    """The width of ``text`` drawn at ``size``, in pixels."""
    return int(math.ceil(sum(_glyph(size, c)[1] for c in text)))


@functools.lru_cache(maxsize=512)
def _text_mask(size: int, text: str) -> np.ndarray:
    """The coverage mask of one line of ``text`` (line height x width)."""
    if not text:
        return np.zeros((_line_height(size), 1), np.uint8)
    glyphs = [_glyph(size, c) for c in text]
    lefts = np.round(np.cumsum([0.0] + [advance for _, advance in glyphs[:-1]])).astype(int)
    width = max(int(x) + m.shape[1] for x, (m, _) in zip(lefts, glyphs, strict=True))
    line = np.zeros((_line_height(size), width), np.uint8)
    for left, (mask, _) in zip(lefts, glyphs, strict=True):
        region = line[:, left : left + mask.shape[1]]
        np.maximum(region, mask, out=region)
    return line


def _draw_text(
    canvas: np.ndarray, top: int, left: int, text: str, size: int, ink: tuple[int, int, int]
) -> None:
    """Blend ``text`` in colour ``ink`` into ``canvas`` at (top, left), clipped to it."""
    mask = _text_mask(size, text)
    height = min(mask.shape[0], canvas.shape[0] - top)
    width = min(mask.shape[1], canvas.shape[1] - left)
    if height <= 0 or width <= 0:
        return
    alpha = mask[:height, :width, np.newaxis].astype(np.float32) / 255.0
    region = canvas[top : top + height, left : left + width]
    blended = region * (1.0 - alpha) + np.asarray(ink, np.float32) * alpha
    region[...] = np.round(blended).astype(np.uint8)


def _fit(size: int, text: str, width: int) -> str:
    """``text`` cut (with "...") to at most ``width`` pixels."""
    if text_width(size, text) <= width:
        return text
    while text and text_width(size, text + "...") > width:
        text = text[:-1]
    return text + "..."


def _wrap(size: int, parts: Sequence[str], width: int) -> list[str]:
    """``parts`` joined by " - " into lines of at most ``width`` pixels (a part is not split)."""
    lines: list[str] = []
    for part in parts:
        if lines and text_width(size, f"{lines[-1]} - {part}") <= width:
            lines[-1] = f"{lines[-1]} - {part}"
        else:
            lines.append(part)
    return lines


@dataclass
class Picture:
    """A drawn grid: the RGB array and, per cell, the box of its image (top, left, h, w)."""

    array: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    scale: int


def grid(
    cells: Sequence[np.ndarray],
    colors: Sequence[tuple[int, int, int]],
    captions: Sequence[Sequence[str]] | None = None,
    header: Sequence[str] = (),
    min_side: int = MIN_SIDE,
) -> Picture:
    """Draw same-sized RGB ``cells`` row-major, each framed and captioned in its colour.

    Cells lower than ``min_side`` pixels are enlarged by an integer factor (nearest
    neighbour), so 8x8 digits stay visible in TensorBoard. Under each cell, a strip
    tinted like its frame holds its caption lines; above the grid, the ``header``
    parts (joined by " - ", wrapped to the grid's width).
    """
    if not cells:
        raise ValueError("grid needs at least one cell")
    captions = captions if captions is not None else [[] for _ in cells]
    factor = max(1, math.ceil(min_side / cells[0].shape[0]))
    height, width = cells[0].shape[0] * factor, cells[0].shape[1] * factor
    size = int(min(18, max(12, width // 7)))
    line = _line_height(size)
    lines = max((len(c) for c in captions), default=0)
    strip = lines * line + 2 * PAD if lines else 0
    tile_h, tile_w = height + strip + 2 * BORDER, width + 2 * BORDER
    columns = max(1, min(len(cells), math.ceil(math.sqrt(len(cells) * tile_h / tile_w))))
    fitting = (MAX_WIDTH + GAP) // (tile_w + GAP)  # columns within TensorBoard's card
    columns = max(min(2, len(cells)), min(columns, fitting))
    rows = math.ceil(len(cells) / columns)
    grid_w = columns * (tile_w + GAP) - GAP
    head = _wrap(size, header, grid_w - 2 * PAD) if header else []
    canvas_w = max([grid_w] + [text_width(size, t) + 2 * PAD for t in head])
    top0 = len(head) * line + 2 * PAD if head else 0
    canvas = np.full((top0 + rows * (tile_h + GAP) - GAP, canvas_w, 3), 255, np.uint8)
    boxes = []
    for index, (cell, color) in enumerate(zip(cells, colors, strict=True)):
        top = top0 + (index // columns) * (tile_h + GAP)
        left = (index % columns) * (tile_w + GAP)
        canvas[top : top + tile_h, left : left + tile_w] = color
        box = (top + BORDER, left + BORDER, height, width)
        if factor > 1:
            cell = np.repeat(np.repeat(cell, factor, axis=0), factor, axis=1)
        canvas[box[0] : box[0] + height, box[1] : box[1] + width] = cell
        if strip:
            strip_top = box[0] + height
            canvas[strip_top : strip_top + strip, box[1] : box[1] + width] = TINTS.get(
                tuple(color), WHITE
            )
        boxes.append(box)
    for row, text in enumerate(head):
        _draw_text(canvas, PAD + row * line, PAD, text, size, TEXT)
    for box, caption, color in zip(boxes, captions, colors, strict=True):
        for row, text in enumerate(caption):
            ink = WRONG_TEXT if row == 0 and tuple(color) == RED else TEXT
            top = box[0] + box[2] + PAD + row * line
            _draw_text(canvas, top, box[1] + PAD, _fit(size, text, width - 2 * PAD), size, ink)
    return Picture(canvas, boxes, factor)


def text_picture(lines: Sequence[str], size: int = 14) -> np.ndarray:
    """``lines`` of text drawn dark on white, one per row, as an RGB array.

    A picture is shown as it is: TensorBoard smooths scalar charts, never images.
    """
    height = _line_height(size)
    width = max(text_width(size, text) for text in lines) + 2 * PAD
    canvas = np.full((len(lines) * height + 2 * PAD, width, 3), 255, np.uint8)
    for row, text in enumerate(lines):
        _draw_text(canvas, PAD + row * height, PAD, text, size, TEXT)
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
