"""CkptCallback vs keras.callbacks.ModelCheckpoint(save_best_only=True), side by side.

For two models (MobileNetV2 with ``weights=None``, and a Dense stack of about 200 MB of
weights), both with Adam (so a full save holds about three times the weights):

* blocking: the time ``on_epoch_end`` holds the training thread on an epoch that saves;
* throughput: bytes per second of CkptCallback's background write (the file's size over
  the job's time, from the manifest), next to a plain sequential write (``write`` +
  ``fsync``) of the same bytes in the same folder, alternating one and the other;
  and, for reference, the same figure for the background writes that overlapped the
  training steps.

Run: ``python benchmarks/bench_ckpt.py [--saves 5] [--steps 2] [--dir DIR]``.
Each measurement has one warm-up round first (reported apart for blocking), then the
median of ``--saves`` rounds.
Between saves the model trains ``--steps`` real steps; CkptCallback's write of one save
runs during them, and before the next timed save the benchmark waits for it (that
wait is printed, not counted as blocking). Targets: blocking <= 0.25 of
ModelCheckpoint's, throughput >= 0.5 of the plain write.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from cvml_ckpt import CkptCallback  # noqa: E402

from cvml_core.keras_compat import keras  # noqa: E402


def mobilenet():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=10)
    x = np.random.default_rng(0).random((2, 224, 224, 3)).astype("float32")
    return model, x, np.array([1, 2])


def dense_stack():
    model = keras.Sequential(
        [keras.Input((4096,))]
        + [keras.layers.Dense(4096, activation="relu") for _ in range(3)]
        + [keras.layers.Dense(10)]
    )
    x = np.random.default_rng(0).random((8, 4096)).astype("float32")
    return model, x, np.arange(8) % 10


def plain_write(path: Path, data: bytes) -> float:
    start = time.perf_counter()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def run(name, factory, saves, steps, root):
    keras.utils.set_random_seed(0)
    model, x, y = factory()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.train_on_batch(x, y)  # builds the optimizer state
    weights_mb = sum(w.nbytes for w in model.get_weights()) / 1e6
    log_dir = root / name
    # The first save of each callback is a warm-up, reported apart (CkptCallback's first
    # save also runs Keras' saving walk, which later saves replay).
    logs = [{"val_loss": 100.0 - i, "loss": 100.0 - i} for i in range(saves + 1)]

    keras_cb = keras.callbacks.ModelCheckpoint(
        str(log_dir / "keras" / "best.keras"), monitor="val_loss", save_best_only=True
    )
    keras_cb.set_model(model)
    keras_cb.on_train_begin({})
    keras_block = []
    for epoch, epoch_logs in enumerate(logs):
        start = time.perf_counter()
        keras_cb.on_epoch_end(epoch, dict(epoch_logs))
        keras_block.append(time.perf_counter() - start)
        for _ in range(steps):
            model.train_on_batch(x, y)
    keras_cb.on_train_end({})

    cb = CkptCallback(log_dir, {"val_loss": "min"})
    cb.set_model(model)
    cb.on_train_begin({})
    ckpt_block, waits = [], []
    for epoch, epoch_logs in enumerate(logs):
        start = time.perf_counter()
        cb.worker.wait(raise_error=True)
        waits.append(time.perf_counter() - start)
        start = time.perf_counter()
        cb.on_epoch_end(epoch, dict(epoch_logs))
        ckpt_block.append(time.perf_counter() - start)
        for _ in range(steps):
            model.train_on_batch(x, y)
    cb.on_train_end({})
    manifest = json.loads((cb.folder / "manifest.json").read_text())
    writes = [a["details"] for a in manifest["artifacts"]][1:]
    size = writes[-1]["size_bytes"]
    ckpt_rate = statistics.median(w["size_bytes"] / w["write_seconds"] for w in writes)

    # Throughput, alternating one background write with the training thread idle (as it
    # is for the plain write) and one plain write of the file's bytes, so both meet the
    # same disk conditions.
    data = (cb.folder / "best_val_loss.keras").read_bytes()
    idle_rates, plain_rates = [], []
    cb.on_train_begin({})
    for i in range(saves + 1):
        cb.on_epoch_end(len(logs) + i, {"val_loss": -1.0 - i, "loss": -1.0 - i})
        cb.wait_for_background()
        manifest = json.loads((cb.folder / "manifest.json").read_text())
        idle = manifest["artifacts"][-1]["details"]
        idle_rates.append(idle["size_bytes"] / idle["write_seconds"])
        plain_rates.append(len(data) / plain_write(cb.folder / f"plain-{i}.bin", data))
    cb.on_train_end({})
    idle_rate = statistics.median(idle_rates[1:])
    plain_rate = statistics.median(plain_rates[1:])
    keras_size = (log_dir / "keras" / "best.keras").stat().st_size
    return {
        "model": name,
        "weights_mb": weights_mb,
        "file_mb": size / 1e6,
        "keras_file_mb": keras_size / 1e6,
        "keras_block_s": statistics.median(keras_block[1:]),
        "ckpt_block_s": statistics.median(ckpt_block[1:]),
        "keras_first_s": keras_block[0],
        "ckpt_first_s": ckpt_block[0],
        "wait_s": max(waits),
        "ckpt_mb_s_training": ckpt_rate / 1e6,
        "ckpt_mb_s_idle": idle_rate / 1e6,
        "plain_mb_s": plain_rate / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=5, help="timed saves per callback")
    parser.add_argument("--steps", type=int, default=2, help="training steps between saves")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-ckpt-") as tmp:
        rows = [
            run("mobilenet_v2", mobilenet, args.saves, args.steps, Path(tmp)),
            run("dense_200mb", dense_stack, args.saves, args.steps, Path(tmp)),
        ]
    print(
        f"\nsaves per callback: 1 warm-up + {args.saves} timed (medians), "
        f"training steps between saves: {args.steps}"
    )
    head = (
        f"{'model':<14}{'weights MB':>11}{'file MB':>9}{'MC block s':>11}{'ckpt block s':>13}"
        f"{'block ratio':>12}{'bg MB/s idle':>13}{'bg MB/s train':>14}{'plain MB/s':>11}"
        f"{'tput ratio':>11}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['model']:<14}{r['weights_mb']:>11.1f}{r['file_mb']:>9.1f}"
            f"{r['keras_block_s']:>11.3f}{r['ckpt_block_s']:>13.3f}"
            f"{r['ckpt_block_s'] / r['keras_block_s']:>12.3f}{r['ckpt_mb_s_idle']:>13.0f}"
            f"{r['ckpt_mb_s_training']:>14.0f}{r['plain_mb_s']:>11.0f}"
            f"{r['ckpt_mb_s_idle'] / r['plain_mb_s']:>11.2f}"
        )
    print(
        "block ratio = CkptCallback / ModelCheckpoint blocking per save (target <= 0.25); "
        "tput ratio = background write (idle) / plain write+fsync (target >= 0.5)."
    )
    for r in rows:
        print(
            f"{r['model']}: first (warm-up) save blocked {r['keras_first_s']:.3f} s "
            f"(ModelCheckpoint) vs {r['ckpt_first_s']:.3f} s (CkptCallback); "
            f"ModelCheckpoint file {r['keras_file_mb']:.1f} MB, written at "
            f"{r['keras_file_mb'] / r['keras_block_s']:.0f} MB/s on the training thread; "
            f"longest wait for the previous background write before a save: {r['wait_s']:.3f} s; "
            f"background write during training: {r['ckpt_mb_s_training']:.0f} MB/s "
            f"({r['ckpt_mb_s_training'] / r['plain_mb_s']:.2f} of plain)"
        )


if __name__ == "__main__":
    main()
