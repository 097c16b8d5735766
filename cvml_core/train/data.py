"""What ``TrainInfer`` accepts as data, made ready for ``model.fit``.

A ``tf.data.Dataset`` of ``(x, y)`` (batched or not) or an ``(x, y)`` tuple of
arrays. Whether a dataset is batched is read from the public ``element_spec``
against the model's input (one more axis than an example means batches); when that
cannot tell, it is taken as batched, as ``model.fit`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cvml_core.train.tf import tf


def _first_spec(spec: Any) -> Any:
    """The spec of the model input in a dataset element ``(x, y, ...)`` or ``x``."""
    if isinstance(spec, tuple) and spec:
        spec = spec[0]
    flat = tf.nest.flatten(spec)
    return flat[0] if flat else None


def _first_batch_size(dataset: tf.data.Dataset) -> int | None:
    """The leading size of the dataset's first element, read through the public API;
    None for a dataset that may be readable once (unknown cardinality)."""
    if int(dataset.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY):
        return None
    try:
        element = next(iter(dataset.take(1)))
    except StopIteration:
        return None
    shape = getattr(_first_spec(element), "shape", None)
    return int(shape[0]) if shape is not None and shape.rank else None


def _model_input_rank(model: Any) -> int | None:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1:
        return None
    shape = getattr(inputs[0], "shape", None)
    return None if shape is None else len(shape)


def dataset_batching(dataset: tf.data.Dataset, model: Any = None) -> tuple[bool, int | None]:
    """Whether ``dataset`` yields batches, and their size when it is known.

    Decided from the public ``element_spec`` against the model's input: one more axis
    than an example means batches. When that cannot tell (the model's input rank is
    unknown), the dataset is taken as batched, as ``model.fit`` does. The size is the
    static leading dimension, else that of the first batch.
    """
    spec = _first_spec(dataset.element_spec)
    shape = getattr(spec, "shape", None)
    batched = True
    model_rank = _model_input_rank(model)
    if shape is not None and shape.rank is not None and model_rank is not None:
        batched = shape.rank != model_rank - 1
    if not batched:
        return False, None
    size = shape[0] if shape is not None and shape.rank else None
    return True, size if size is not None else _first_batch_size(dataset)


class Data:
    """Data ready for Keras: a batched dataset, or arrays with a batch size."""

    def __init__(self, x: Any, y: Any = None, batch_size: int | None = None) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size

    @property
    def is_dataset(self) -> bool:
        return isinstance(self.x, tf.data.Dataset)

    def fit_args(self) -> dict[str, Any]:
        if self.is_dataset:  # a dataset is shuffled (or not) by its own pipeline
            return {"x": self.x, "shuffle": False}
        return {"x": self.x, "y": self.y, "batch_size": self.batch_size}

    def validation_args(self) -> dict[str, Any]:
        if self.is_dataset:
            return {"validation_data": self.x}
        return {"validation_data": (self.x, self.y), "validation_batch_size": self.batch_size}

    def sample(self, n: int) -> tuple[Any, Any]:
        """The first ``n`` examples as numpy: ``(x, y)``, ``y`` None if there is none."""
        if not self.is_dataset:
            x = tf.nest.map_structure(lambda a: np.asarray(a)[:n], self.x)
            y = None if self.y is None else tf.nest.map_structure(
                lambda a: np.asarray(a)[:n], self.y
            )
            return x, y
        element = next(iter(self.x.unbatch().take(n).batch(n)))
        element = tf.nest.map_structure(lambda t: t.numpy(), element)
        if isinstance(element, tuple):
            return element[0], element[1] if len(element) > 1 else None
        return element, None


def prepare(
    data: Any, batch_size: int | None, name: str, model: Any, strict: bool = True
) -> Data:
    """Check ``data`` and batch it; a batch size that contradicts the dataset is an
    error unless ``strict`` is False."""
    if isinstance(data, tf.data.Dataset):
        batched, size = dataset_batching(data, model)
        if batched:
            if strict and batch_size is not None and size is not None and size != batch_size:
                raise ValueError(
                    f"{name} is already batched with batch size {size}, but batch_size="
                    f"{batch_size} was passed. Pass batch_size={size} (or None), or pass "
                    f"{name} unbatched so that it is batched with batch_size. "
                    f"Received: batch_size={batch_size!r}"
                )
            return Data(data, batch_size=size or batch_size)
        if batch_size is None:
            raise ValueError(
                f"{name} is not batched, so batch_size is needed to batch it. "
                f"Received: batch_size=None"
            )
        return Data(data.batch(batch_size).prefetch(tf.data.AUTOTUNE), batch_size=batch_size)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if batch_size is None:
            raise ValueError(f"{name} is an (x, y) tuple of arrays: batch_size is needed. "
                             "Received: batch_size=None")
        lengths = {len(a) for a in tf.nest.flatten(x) + tf.nest.flatten(y)}
        if len(lengths) > 1:
            raise ValueError(
                f"{name} is an (x, y) tuple whose arrays have different lengths: "
                f"{sorted(lengths)}. Received: {name} of lengths {sorted(lengths)}"
            )
        return Data(x, y, batch_size)
    raise TypeError(
        f"{name} must be a tf.data.Dataset of (x, y) or an (x, y) tuple of arrays. "
        f"Received: {name} of type {type(data).__name__}"
    )


def inference_data(dataset: Any, batch_size: int | None, fallback: int, model: Any) -> Data:
    """Data for ``predict``/``evaluate``, batched with ``batch_size`` or ``fallback``;
    only a ``batch_size`` the caller passed can contradict a dataset's own batching."""
    size = batch_size or fallback
    if isinstance(dataset, tf.data.Dataset):
        return prepare(dataset, size, "dataset", model, strict=batch_size is not None)
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        return prepare(dataset, size, "dataset", model)
    return Data(dataset, None, size)
