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
  includes every callback's epoch end); overhead = wall - wall(none), paired within
  each round, median over rounds. Noisy on a busy machine: compare it with the next
  figures, which time the callback itself.
* hooks: time spent inside the TensorBoard callback's own hooks (the training thread),
  per epoch; worker: CPU time of the jobs TensorboardCallback hands to its background
  worker (the event writing; its waits for the disk are not counted: they do not
  hold training), per epoch. The image cost per image epoch adds both.

Targets: tb-scalars overhead <= keras overhead; an image epoch's extra hook time < 5%
of an epoch.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
import shutil  # noqa: E402
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
    """At each epoch begin and at train end: the time, and the callback's time spent so far."""

    def __init__(self, spent):
        super().__init__()
        self.spent = spent
        self.marks = []

    def _mark(self):
        self.marks.append((time.perf_counter(), self.spent["total"], self.spent["worker"]))

    def on_epoch_begin(self, epoch, logs=None):
        self._mark()

    def on_train_end(self, logs=None):
        self._mark()


def time_hooks(callback):
    """Wrap the callback's own (non-default) hooks to add up the time spent in them.

    Default hooks stay unwrapped, so Keras keeps dispatching batches the way it would.
    """
    import keras

    spent = {"total": 0.0, "worker": 0.0}
    for name in HOOKS:
        method = getattr(callback, name)
        default = getattr(keras.callbacks.Callback, name)
        if name not in vars(callback) and getattr(type(callback), name) is default:
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

        def timed_submit(name, job):
            def timed_job():
                start = time.thread_time()  # CPU time: what competes with training
                try:
                    return job()
                finally:
                    spent["worker"] += time.thread_time() - start

            return submit(name, timed_job)

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
    spent = {"total": 0.0, "worker": 0.0}
    if callback is not None:
        spent = time_hooks(callback)
    clock = EpochClock(spent)  # first, so its epoch begin runs before the others'
    build_model().fit(
        x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=32, verbose=0,
        callbacks=[clock] + ([callback] if callback is not None else []),
    )
    marks = np.array(clock.marks)
    steady = np.diff(marks, axis=0)[1:]  # epochs 2..N: the first one traces functions
    all_in = (marks[-1, 1:] - marks[0, 1:]) / epochs  # with train begin/end, per epoch
    images = 0
    if isinstance(callback, TensorboardCallback):
        images = sum(1 for a in callback.manifest.artifacts if a["kind"] == "tensorboard-images")
    shutil.rmtree(log_dir, ignore_errors=True)
    return steady, all_in, images


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    x, y, source = load_data()
    split = int(len(x) * 0.8)
    data = (x[:split], y[:split], x[split:], y[split:])
    configs = ["none", "keras", "tb-scalars", "tb-images"]
    steady = {c: [] for c in configs}
    all_in = {c: [] for c in configs}
    image_epochs = 0
    root = tempfile.mkdtemp(prefix="bench-tb-")
    print(f"data: {source}; {split} train / {len(x) - split} val; batch 32; "
          f"{rounds} rounds x {epochs} epochs per configuration")
    run("none", data, 2, root)  # warm-up: imports, first graph builds
    for _ in range(rounds):
        for config in configs:
            epoch_rows, per_epoch, images = run(config, data, epochs, root)
            steady[config].append(epoch_rows)
            all_in[config].append(per_epoch)
            if config == "tb-images":
                image_epochs += images
    shutil.rmtree(root, ignore_errors=True)

    rows = {c: np.concatenate(steady[c]) for c in configs}  # (wall, hooks, worker cpu)
    med = {c: np.median(rows[c], axis=0) for c in configs}
    whole = {c: np.mean(all_in[c], axis=0) for c in configs}
    base = med["none"][0]
    # wall overhead paired per round (the rounds see different machine load), then median
    paired = {
        c: np.median([np.median(a[:, 0]) - np.median(b[:, 0])
                      for a, b in zip(steady[c], steady["none"], strict=True)])
        for c in configs
    }
    print("\nmedian over epochs 2..N (ms)                 | mean per epoch incl. fit setup")
    print(f"{'config':11s} {'wall':>7s} {'overhead':>9s} {'hooks':>7s} {'worker':>7s} "
          f"| {'hooks':>7s} {'worker':>7s}")
    for c in configs:
        wall, hook, work = med[c] * 1e3
        print(f"{c:11s} {wall:7.1f} {paired[c] * 1e3:9.1f} {hook:7.2f} {work:7.2f} "
              f"| {whole[c][0] * 1e3:7.2f} {whole[c][1] * 1e3:7.2f}")
    print(f"\nbaseline epoch (none): {base * 1e3:.1f} ms. hooks: time inside the callback's "
          "hooks (training thread); worker: CPU time of its background jobs.")
    ratio = med["tb-scalars"][1] / med["keras"][1]
    print(f"scalars: hooks tb-scalars / keras = {ratio:.2f} (target <= 1); wall overhead "
          f"tb-scalars {paired['tb-scalars'] * 1e3:.1f} ms vs keras "
          f"{paired['keras'] * 1e3:.1f} ms (noisy on a shared machine)")
    share = image_epochs / (rounds * epochs)
    extra = (med["tb-images"][1:] - med["tb-scalars"][1:]).sum() / max(share, 1e-9)
    extra_all = (whole["tb-images"] - whole["tb-scalars"]).sum() * rounds * epochs / max(
        image_epochs, 1
    )
    print(f"images: {image_epochs} image epochs of {rounds * epochs}; extra per image epoch "
          f"(hooks + worker) {extra * 1e3:.1f} ms = {extra / base * 100:.1f}% of an epoch "
          f"(target < 5%); with the one-off setup (sample prediction tracing) "
          f"{extra_all * 1e3:.1f} ms = {extra_all / base * 100:.1f}%")


if __name__ == "__main__":
    main()
