"""Per-epoch overhead of TensorboardCallback against keras.callbacks.TensorBoard, in one run.

Run: python benchmarks/bench_tb.py [rounds] [epochs]      (defaults: 3 rounds of 8 epochs)

Model and data: the demo's kind of model, a small CNN on scikit-learn's 8x8 digits
(random 8x8 images when scikit-learn is missing). Four configurations train the same
model from the same seed, interleaved in rounds so that machine load hits them alike:

* none: no TensorBoard callback (the baseline epoch);
* keras: ``keras.callbacks.TensorBoard(log_dir, histogram_freq=0)`` (its defaults otherwise);
* tb-scalars: ``TensorboardCallback(log_dir, {"val_loss": "min"})``;
* tb-images: the same with ``image_shape=(8, 8, 1)`` and 8 sample images.

Two figures per configuration, the first epoch of each fit left out (tracing):

* wall: median wall time of an epoch (from one ``on_epoch_begin`` to the next, so it
  includes every callback's epoch end); overhead = wall - wall(none). Noisy on a busy
  machine: compare it with the next figure.
* hooks: time spent inside the TensorBoard callback's own hooks (the training thread),
  per epoch; worker: time of the jobs TensorboardCallback hands to its background
  worker (the event writing), per epoch. The image cost per image epoch adds both.

Targets: tb-scalars overhead <= keras overhead; an image epoch's extra hook time < 5%
of an epoch.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from cvml_tb import TensorboardCallback  # noqa: E402

from cvml_core.keras_compat import keras  # noqa: E402

HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end",
)


def load_data():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        rng = np.random.default_rng(0)
        x = rng.random((1800, 8, 8, 1)).astype("float32")
        y = rng.integers(0, 10, 1800).astype("int32")
        return x, y, "random 8x8 images (scikit-learn not installed)"
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., np.newaxis]
    return x, digits.target.astype("int32"), "scikit-learn digits (1797 8x8 images)"


def build_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class EpochClock(keras.callbacks.Callback):
    """Timestamps of each epoch begin and of train end."""

    def __init__(self):
        super().__init__()
        self.marks = []

    def on_epoch_begin(self, epoch, logs=None):
        self.marks.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.marks.append(time.perf_counter())


def time_hooks(callback):
    """Wrap the callback's own (non-default) hooks to add up the time spent in them.

    Default hooks stay unwrapped, so Keras keeps dispatching batches the way it would.
    """
    from keras.src import utils

    spent = {"total": 0.0}
    for name in HOOKS:
        method = getattr(callback, name)
        if utils.is_default(method):
            continue

        def timed(*args, _method=method, **kwargs):
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent["total"] += time.perf_counter() - start

        setattr(callback, name, functools.wraps(method)(timed))
    if isinstance(callback, TensorboardCallback):  # and the jobs it hands to its worker
        submit = callback.run_in_background
        spent["worker"] = 0.0

        def timed_submit(name, job, supersede=False):
            def timed_job(state):
                start = time.perf_counter()
                try:
                    return job(state)
                finally:
                    spent["worker"] += time.perf_counter() - start

            return submit(name, timed_job, supersede)

        callback.run_in_background = timed_submit
    return spent


def make_callback(config, log_dir, sample):
    if config == "none":
        return None
    if config == "keras":
        return keras.callbacks.TensorBoard(str(log_dir), histogram_freq=0)
    if config == "tb-scalars":
        return TensorboardCallback(log_dir, {"val_loss": "min"})
    return TensorboardCallback(
        log_dir, {"val_loss": "min"}, image_shape=(8, 8, 1), sample_data=sample, max_images=8
    )


def run(config, data, epochs, root):
    x, y, x_val, y_val = data
    log_dir = Path(tempfile.mkdtemp(prefix=f"{config}-", dir=root))
    callback = make_callback(config, log_dir, (x_val[:8], y_val[:8]))
    clock = EpochClock()
    callbacks = [clock]
    spent = {"total": 0.0, "worker": 0.0}
    if callback is not None:
        spent = time_hooks(callback)
        callbacks.append(callback)
    build_model().fit(
        x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=32, verbose=0,
        callbacks=callbacks,
    )
    epoch_times = np.diff(clock.marks)[1:]  # the first epoch traces the functions
    images = 0
    if isinstance(callback, TensorboardCallback):
        images = sum(1 for a in callback.manifest.artifacts if a["kind"] == "tensorboard-images")
    shutil.rmtree(log_dir, ignore_errors=True)
    return list(epoch_times), spent["total"] / epochs, spent.get("worker", 0.0) / epochs, images


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    x, y, source = load_data()
    split = int(len(x) * 0.8)
    data = (x[:split], y[:split], x[split:], y[split:])
    configs = ["none", "keras", "tb-scalars", "tb-images"]
    walls = {c: [] for c in configs}
    hooks = {c: [] for c in configs}
    worker = {c: [] for c in configs}
    image_epochs = 0
    root = tempfile.mkdtemp(prefix="bench-tb-")
    print(f"data: {source}; {split} train / {len(x) - split} val; batch 32; "
          f"{rounds} rounds x {epochs} epochs per configuration")
    run("none", data, 2, root)  # warm-up: imports, first graph builds
    for _ in range(rounds):
        for config in configs:
            epoch_times, hook_time, worker_time, images = run(config, data, epochs, root)
            walls[config] += epoch_times
            hooks[config].append(hook_time)
            worker[config].append(worker_time)
            if config == "tb-images":
                image_epochs += images
    shutil.rmtree(root, ignore_errors=True)

    base = statistics.median(walls["none"])
    print(f"\n{'config':12s} {'wall/epoch':>11s} {'overhead':>10s} {'hooks/epoch':>12s} "
          f"{'worker/epoch':>13s}")
    for config in configs:
        wall = statistics.median(walls[config])
        hook = statistics.median(hooks[config])
        print(f"{config:12s} {wall * 1e3:9.1f}ms {(wall - base) * 1e3:8.1f}ms "
              f"{hook * 1e3:10.2f}ms {statistics.median(worker[config]) * 1e3:11.2f}ms")
    keras_hooks = statistics.median(hooks["keras"])
    scalar_hooks = statistics.median(hooks["tb-scalars"])
    # an image epoch's extra cost, training thread and worker together (conservative)
    scalar_cost = statistics.mean(hooks["tb-scalars"]) + statistics.mean(worker["tb-scalars"])
    image_cost = statistics.mean(hooks["tb-images"]) + statistics.mean(worker["tb-images"])
    per_image_epoch = (image_cost - scalar_cost) * rounds * epochs / max(image_epochs, 1)
    wall_keras = statistics.median(walls["keras"]) - base
    wall_scalars = statistics.median(walls["tb-scalars"]) - base
    print(f"\nbaseline epoch: {base * 1e3:.1f} ms")
    print(f"hooks ratio tb-scalars / keras = {scalar_hooks / keras_hooks:.2f} "
          "(target <= 1)")
    print(f"wall overhead tb-scalars {wall_scalars * 1e3:.1f} ms vs keras "
          f"{wall_keras * 1e3:.1f} ms")
    print(f"image grid: {image_epochs} image epochs of {rounds * epochs}; extra "
          f"{per_image_epoch * 1e3:.1f} ms per image epoch = "
          f"{per_image_epoch / base * 100:.1f}% of an epoch (target < 5%; training thread "
          "and worker together)")


if __name__ == "__main__":
    main()
