"""Benchmark: TFLiteCallback against converting inline in ``on_epoch_end``.

Inline is what a user writes without the callback: ``model.export(path,
format="litert")`` in ``on_epoch_end``. For each model (the demo's small CNN, and
MobileNetV2 at 224 px with ``weights=None``) and each way, a fresh Python process
trains with one conversion per epoch and reports:

* blocking: seconds the training thread spends in ``on_epoch_end`` per conversion;
* end wait: seconds in ``on_train_end`` (TFLiteCallback waits for its last conversion);
* RSS growth: resident memory of the training process after the conversions minus
  before them (the worker process' own memory is reported apart).

``cvml`` trains freely (fast epochs supersede waiting conversions, as in real use);
``cvml-paced`` waits for each conversion after measuring the blocking time, so that
all conversions really happen (the memory comparison after 10 conversions).

Run (a few minutes on 2 cores)::

    python benchmarks/bench_tflite.py [--cnn-conversions 10] [--mobilenet-conversions 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def build(model_name: str):
    import numpy as np

    from cvml_core.keras_compat import keras

    rng = np.random.default_rng(0)
    if model_name == "mobilenetv2":
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2((224, 224, 3), weights=None)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        x = rng.random((4, 224, 224, 3), dtype=np.float32)
        y = rng.integers(0, 1000, 4)
        return model, x, y, 4
    from cvml_core.train.demo import build_model

    model = build_model()
    x = rng.random((256, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 256)
    return model, x, y, 64


def child(model_name: str, way: str, conversions: int) -> dict:
    from cvml_core.keras_compat import keras

    model, x, y, batch = build(model_name)
    model.fit(x, y, epochs=1, batch_size=batch, verbose=0)  # trace train_function first
    out = tempfile.mkdtemp(prefix=f"bench-tflite-{model_name}-{way}-")
    marks: dict[str, list[float]] = {"epoch": [], "end": []}

    class Mark(keras.callbacks.Callback):
        """First and last in the list: time spent by the callbacks between them."""

        def __init__(self, first: bool) -> None:
            super().__init__()
            self.first = first
            self.t0 = {"epoch": 0.0, "end": 0.0}

        def on_epoch_end(self, epoch, logs=None):
            if self.first:
                logs["tick"] = epoch  # improves every epoch: one conversion per epoch
                START["epoch"] = time.perf_counter()
            else:
                marks["epoch"].append(time.perf_counter() - START["epoch"])
                if way == "cvml-paced":  # after the measurement: every epoch converts
                    converter.wait_for_background()

        def on_train_end(self, logs=None):
            if self.first:
                START["end"] = time.perf_counter()
            else:
                marks["end"].append(time.perf_counter() - START["end"])

    START = {"epoch": 0.0, "end": 0.0}

    class InlineExport(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.export(os.path.join(out, f"e{epoch}.tflite"), format="litert",
                              verbose=False)

    if way == "inline":
        converter = InlineExport()
    else:
        from cvml_tflite import TFLiteCallback

        converter = TFLiteCallback(out, {"tick": "max"}, verify_samples=4, sample_data=x[:4])
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    model.fit(x, y, epochs=conversions, batch_size=batch, verbose=0,
              callbacks=[Mark(True), converter, Mark(False)])
    fit_seconds = time.perf_counter() - start
    gc.collect()
    result = {
        "model": model_name, "way": way, "conversions": conversions,
        "blocking": marks["epoch"], "end_wait": marks["end"][0], "fit_seconds": fit_seconds,
        "rss_before_mb": before, "rss_after_mb": rss_mb(),
    }
    if way.startswith("cvml"):
        done = converter.conversions
        result["converted"] = sum(1 for c in done if c["ok"])
        result["worker_rss_mb"] = max((c["worker_rss_mb"] or 0) for c in done)
        result["convert_seconds"] = [c["finished_at"] - c["started_at"] for c in done]
        result["superseded"] = len(converter.worker.superseded)
    else:
        result["converted"] = conversions
    return result


def run_child(model_name: str, way: str, conversions: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", model_name, way, str(conversions)],
        capture_output=True, text=True, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"{model_name}/{way} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cnn-conversions", type=int, default=10)
    parser.add_argument("--mobilenet-conversions", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, way, count = args.child
        print(json.dumps(child(name, way, int(count))))
        return

    import platform

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs")
    results = {}
    for name, count, ways in (
        ("cnn", args.cnn_conversions, ("inline", "cvml", "cvml-paced")),
        ("mobilenetv2", args.mobilenet_conversions, ("inline", "cvml")),
    ):
        for way in ways:
            r = run_child(name, way, count)
            results[name, way] = r
            mean_block = sum(r["blocking"]) / len(r["blocking"])
            print(
                f"{name:12s} {way:7s} conversions={r['conversions']:2d} "
                f"blocking/conv mean={mean_block:.3f}s max={max(r['blocking']):.3f}s "
                f"end_wait={r['end_wait']:.2f}s fit={r['fit_seconds']:.1f}s "
                f"rss {r['rss_before_mb']:.0f}->{r['rss_after_mb']:.0f} MiB "
                f"(+{r['rss_after_mb'] - r['rss_before_mb']:.0f})"
                + (f" worker_rss={r['worker_rss_mb']:.0f} MiB converted={r['converted']}"
                   f" superseded={r['superseded']}" if way != "inline" else ""),
                flush=True,
            )
        inline = results[name, "inline"]
        for way in ways[1:]:
            cvml = results[name, way]
            ratio = (sum(cvml["blocking"]) / len(cvml["blocking"])) / (
                sum(inline["blocking"]) / len(inline["blocking"]))
            growth_inline = inline["rss_after_mb"] - inline["rss_before_mb"]
            growth_cvml = cvml["rss_after_mb"] - cvml["rss_before_mb"]
            print(f"{name:12s} {way}/inline: blocking ratio = {ratio:.4f}; training-process "
                  f"RSS growth {growth_cvml:+.0f} MiB vs {growth_inline:+.0f} MiB "
                  f"({cvml['converted']} vs {inline['converted']} conversions)", flush=True)


if __name__ == "__main__":
    main()
