"""Check the first batch of training data against the model before the first epoch.

A mismatch between data and model otherwise surfaces deep inside TensorFlow once
training has started (a shape error in a ``Dense`` layer, ``Received a label value of
12 which is outside the valid range``), or not at all: integer labels with a one-hot
loss are broadcast and train a wrong model silently. :func:`check_first_batch` raises a
``ValueError`` naming the dataset, the shape received and the shape expected instead.

What is checked, on the **first batch only** (later batches are not read):

- **inputs**: each input's shape against ``model.inputs[i].shape`` without the batch
  dimension (``None`` matches any size). A trailing dimension of 1 that Keras adds or
  drops by itself (``(batch, 8, 1)`` for an input of ``(None, 8)``) is accepted. A
  multi-input model is checked input by input when ``x`` is a list/tuple of as many
  inputs, or a dict keyed by input names; other structures are skipped.
- **labels**, for a single-output model compiled with a categorical loss (found from
  ``model.loss``: a string, a ``keras.losses`` class or function):
  ``sparse_categorical_crossentropy`` (and its focal variant) wants integer class ids of
  the output's shape without its last axis (``(batch,)`` or ``(batch, 1)`` for a
  classifier), with ``0 <= id < units`` (the output's last dimension; a loss object's
  ``ignore_class`` id is allowed too);
  ``categorical_crossentropy`` (and its focal variant) wants one-hot labels of the
  output's shape. Other losses, multi-output models and nested labels are not checked.

Reading the first batch: for arrays it is ``x[:batch_size]``. A ``tf.data.Dataset`` is
read once more for its first batch (``next(iter(dataset.take(1)))``); Keras itself
re-reads a dataset every epoch, so nothing the training needs is consumed. A dataset of
unknown cardinality (``from_generator``, ``filter``, ...) may be one-shot (a generator
object behind ``from_generator`` yields its data once), so it is **not read**: its
``element_spec`` shapes are checked instead, and label values (class-id range) are not.
Only public API is used: ``element_spec``, ``cardinality()``, ``take``, ``model.inputs``,
``model.outputs``, ``model.loss``.

(About 350 lines: each kind of mismatch has its own check and the message users read.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cvml_core.train.tf import tf

Shape = tuple[int | None, ...]

SPARSE_LOSSES = ("sparse_categorical_crossentropy", "sparse_categorical_focal_crossentropy")
ONE_HOT_LOSSES = ("categorical_crossentropy", "categorical_focal_crossentropy")


# -- reading the first batch -----------------------------------------------------------


class FirstBatch:
    """The first batch's input shapes, label shape and (when read) label values."""

    def __init__(self, x: Any, y: Any, read: bool) -> None:
        self.x = x  # a nest of Shape (or None where unknown)
        self.y = y  # a nest of Shape, or None without labels
        self.y_values: np.ndarray | None = None
        self.read = read  # False: shapes from element_spec, no values


def _shape_of(value: Any) -> Shape | None:
    shape = getattr(value, "shape", None)
    if shape is None:
        try:
            shape = np.shape(value)
        except Exception:
            return None
    if isinstance(shape, tf.TensorShape):
        if shape.rank is None:
            return None
        return tuple(shape.as_list())
    try:
        return tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):
        return None


def _split(element: Any) -> tuple[Any, Any]:
    """``(x, y)`` of a dataset element ``(x, y[, sample_weight])`` or ``x``."""
    if isinstance(element, tuple):
        if len(element) >= 2:
            return element[0], element[1]
        if len(element) == 1:
            return element[0], None
    return element, None


def _label_values(y: Any) -> np.ndarray | None:
    if y is None or isinstance(y, (Mapping, list, tuple)):
        return None
    if isinstance(y, (tf.SparseTensor, tf.RaggedTensor)):
        return None
    try:
        return np.asarray(y)
    except Exception:
        return None


def first_batch(x: Any, y: Any = None, batch_size: int | None = None) -> FirstBatch | None:
    """The first batch of a batched ``tf.data.Dataset`` ``x``, or of arrays ``x``, ``y``.

    None when there is nothing to check (an empty dataset, shapes that cannot be read).
    """
    if isinstance(x, tf.data.Dataset):
        if int(x.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY):
            spec_x, spec_y = _split(x.element_spec)
            return FirstBatch(
                tf.nest.map_structure(_shape_of, spec_x),
                None if spec_y is None else tf.nest.map_structure(_shape_of, spec_y),
                read=False,
            )
        try:
            element = next(iter(x.take(1)))
        except StopIteration:
            return None
        return _read_batch(*_split(element))
    n = batch_size or 32
    try:
        bx = tf.nest.map_structure(lambda a: a[:n], x)
        by = None if y is None else tf.nest.map_structure(lambda a: a[:n], y)
    except Exception:
        return None
    return _read_batch(bx, by)


def _read_batch(bx: Any, by: Any) -> FirstBatch:
    """A :class:`FirstBatch` of a batch read from the data: shapes and label values."""
    batch = FirstBatch(
        tf.nest.map_structure(_shape_of, bx),
        None if by is None else tf.nest.map_structure(_shape_of, by),
        read=True,
    )
    batch.y_values = _label_values(by)
    return batch


# -- the model ---------------------------------------------------------------------------


def _model_tensors(model: Any, attr: str) -> list[Any] | None:
    try:
        tensors = getattr(model, attr)
    except Exception:  # a subclassed or unbuilt model has no inputs yet
        return None
    if not tensors or not isinstance(tensors, Sequence):
        return None
    return list(tensors)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def loss_name(loss: Any) -> str | None:
    """The canonical name of a single compiled loss: ``"sparse_categorical_crossentropy"``.

    From a string (``"sparse_categorical_crossentropy"``, ``"SparseCategoricalCrossentropy"``),
    a ``keras.losses`` object (its class name) or a loss function (its ``__name__``).
    None for anything else (several losses, custom callables are returned by name).
    """
    if isinstance(loss, (Sequence, Mapping)) and not isinstance(loss, str):
        items = list(loss.values()) if isinstance(loss, Mapping) else list(loss)
        if len(items) != 1:
            return None
        loss = items[0]
    name: Any
    if isinstance(loss, str):
        name = loss
    elif isinstance(loss, type):
        return None
    elif hasattr(loss, "get_config") and hasattr(loss, "call"):  # a keras Loss object
        name = type(loss).__name__
    else:
        name = getattr(loss, "__name__", None)
    return _snake(name.strip()) if isinstance(name, str) else None


# -- the checks ---------------------------------------------------------------------------


def _fmt(shape: Shape | None) -> str:
    if shape is None:
        return "unknown"
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _fmt_expected(shape: Shape) -> str:
    """A model shape for a message: ``(batch, 8)``, ``(batch, any, any, 3)``."""
    dims = ["batch"] + ["any" if d is None else str(d) for d in shape[1:]]
    return f"({dims[0]},)" if len(dims) == 1 else "(" + ", ".join(dims) + ")"


def _dims_match(got: Shape, want: Shape) -> bool:
    """Same rank and the same size where both are known, the batch axis aside."""
    if len(got) != len(want):
        return False
    return all(w is None or g is None or g == w for g, w in zip(got[1:], want[1:], strict=True))


def _input_matches(got: Shape, want: Shape) -> bool:
    """As Keras adapts it: a trailing 1 may be added or dropped."""
    if _dims_match(got, want):
        return True
    if len(got) == len(want) - 1 and want[-1] in (1, None):
        return _dims_match((*got, 1), want)
    if len(got) == len(want) + 1 and got[-1] == 1:
        return _dims_match(got[:-1], want)
    return False


def _check_inputs(name: str, model: Any, batch: FirstBatch, where: str) -> None:
    inputs = _model_tensors(model, "inputs")
    if inputs is None:
        return
    wants = [_shape_of(t) for t in inputs]
    pairs: list[tuple[str, Any, Shape | None]] = []
    x = batch.x
    if len(inputs) == 1 and (x is None or isinstance(x, tuple) and _is_shape(x)):
        pairs.append(("inputs", x, wants[0]))
    elif isinstance(x, (list, tuple)) and len(x) == len(inputs) and not _is_shape(x):
        pairs.extend((f"inputs[{i}]", s, w) for i, (s, w) in enumerate(zip(x, wants, strict=True)))
    elif isinstance(x, Mapping):
        for tensor, want in zip(inputs, wants, strict=True):
            key = getattr(tensor, "name", None)
            if isinstance(key, str) and key in x:
                pairs.append((f"inputs[{key!r}]", x[key], want))
    for label, got, want in pairs:
        if not _is_shape(got) or want is None:
            continue
        if not _input_matches(got, want):
            raise ValueError(
                f"{name}: {label} have shape {_fmt(got)} {where} but the model expects "
                f"{_fmt_expected(want)} (model.inputs shape {_fmt(want)}; None = any size). "
                f"Received: {label} with shape {_fmt(got)}"
            )


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple) and all(d is None or isinstance(d, int) for d in value)


def _check_labels(name: str, model: Any, batch: FirstBatch, where: str) -> None:
    got = batch.y
    if not _is_shape(got):  # no labels, nested labels or an unknown rank
        return
    outputs = _model_tensors(model, "outputs")
    if outputs is None or len(outputs) != 1:
        return
    out = _shape_of(outputs[0])
    loss = loss_name(getattr(model, "loss", None))
    if out is None or not out or loss is None:
        return
    units = out[-1]
    if loss in SPARSE_LOSSES:
        ignored = _ignore_class(getattr(model, "loss", None))
        ids = out[:-1]
        if not (_dims_match(got, ids) or _dims_match(got, (*ids, 1))):
            expected = _fmt_expected(ids)
            if len(ids) == 1 or ids[-1] != 1:
                expected += f" or {_fmt_expected((*ids, 1))}"
            hint = ""
            if len(got) == len(out) and got[-1] == units and units not in (None, 1):
                hint = " — one-hot labels need 'categorical_crossentropy'"
            raise ValueError(
                f"{name}: labels have shape {_fmt(got)} {where} but the loss {loss!r} "
                f"expects integer class ids of shape {expected}{hint}. "
                f"Received: labels with shape {_fmt(got)}"
            )
        values = batch.y_values
        if values is not None and ignored is not None:
            values = values[values != ignored]
        _check_ids(name, loss, values, units, got, where)
    elif loss in ONE_HOT_LOSSES:
        if not _dims_match(got, out):
            hint = ""
            if units not in (None, 1) and (
                _dims_match(got, out[:-1]) or _dims_match(got, (*out[:-1], 1))
            ):
                hint = " — integer class ids need 'sparse_categorical_crossentropy'"
            raise ValueError(
                f"{name}: labels have shape {_fmt(got)} {where} but the loss {loss!r} "
                f"expects one-hot labels of shape {_fmt_expected(out)} (the model's "
                f"output, {units} units){hint}. Received: labels with shape {_fmt(got)}"
            )


def _ignore_class(loss: Any) -> int | None:
    """A sparse loss object's ``ignore_class`` (a label id the loss skips), if any."""
    if isinstance(loss, (Sequence, Mapping)) and not isinstance(loss, str):
        items = list(loss.values()) if isinstance(loss, Mapping) else list(loss)
        loss = items[0] if len(items) == 1 else None
    try:
        value = loss.get_config().get("ignore_class")
    except Exception:
        return None
    return value if isinstance(value, int) else None


def _check_ids(
    name: str, loss: str, values: np.ndarray | None, units: int | None, got: Shape, where: str
) -> None:
    if values is None or values.size == 0 or not units:
        return
    if values.dtype == bool:
        values = values.astype("int64")
    if not np.issubdtype(values.dtype, np.number):
        return
    if not np.issubdtype(values.dtype, np.integer):
        fractional = values[~np.isfinite(values) | (values != np.round(values))]
        if fractional.size:
            raise ValueError(
                f"{name}: labels {where} hold {fractional.flat[0]!r}, not a class id, but "
                f"the loss {loss!r} expects integer class ids 0 <= id < {units}. "
                f"Received: labels of dtype {values.dtype} with shape {_fmt(got)}"
            )
    low, high = values.min(), values.max()
    if low < 0 or high >= units:
        raise ValueError(
            f"{name}: labels {where} hold class ids from {low} to {high}, but the model "
            f"has {units} output units, so the loss {loss!r} expects class ids "
            f"0 <= id < {units} (of shape {_fmt(got)}). Received: labels with min {low} "
            f"and max {high}"
        )


def check_first_batch(
    name: str, model: Any, x: Any, y: Any = None, batch_size: int | None = None
) -> None:
    """Check the first batch of ``x`` (a batched dataset) or of arrays ``x``/``y``.

    Raises ``ValueError`` naming ``name`` (``"train_dataset"``), the shape received and
    the shape the model or the loss expects. See the module docs for what is checked.
    """
    batch = first_batch(x, y, batch_size)
    if batch is None:
        return
    where = "in its first batch" if batch.read else "in its element_spec"
    _check_inputs(name, model, batch, where)
    _check_labels(name, model, batch, where)


__all__ = ["check_first_batch", "first_batch", "loss_name"]
