"""Fixtures of the tb plugin's tests: tiny image models and an event-file reader."""

from __future__ import annotations

import numpy as np
import pytest


def _read_run(run_dir):
    """``{tag: [(step, value), ...]}`` of a TensorBoard run, read with TensorBoard's reader.

    Scalars become floats, images the list of encoded PNGs, texts a str. Events are in
    step order (a repeated step stays repeated): TensorBoard reads a run's event files in
    name order, and two names from the same second differ by a counter compared as text
    ("...10.v2" before "...2.v2"), which is not the order they were written in.
    """
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        events = []
        for event in acc.Tensors(tag):
            value = tensor_util.make_ndarray(event.tensor_proto)
            if value.dtype == object:
                flat = [v for v in value.reshape(-1)]
                value = flat[0].decode() if value.ndim == 0 else flat
            else:
                value = float(value) if value.ndim == 0 else value
            events.append((event.step, event.wall_time, value))
        out[tag] = [(step, value) for step, _, value in sorted(events, key=lambda e: e[:2])]
    return out


@pytest.fixture
def read_run():
    """``read_run(run_dir) -> {tag: [(step, value), ...]}``: see ``_read_run``."""
    return _read_run


@pytest.fixture
def images_data():
    """48 flat 8x8 'images' (64 floats in [0, 1]); class 1 when the top half is brighter."""
    rng = np.random.default_rng(0)
    x = rng.random((48, 64)).astype("float32")
    y = (x[:, :32].sum(1) > x[:, 32:].sum(1)).astype("int32")
    return x, y


@pytest.fixture
def cnn():
    """A factory of tiny CNNs on flat 64-value inputs (50 weights)."""
    import keras

    def build(seed=0, learning_rate=0.01):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Reshape((8, 8, 1)),
                keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2, activation="softmax"),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    return build
