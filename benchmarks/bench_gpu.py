"""Checkpoints as a user meets them, on an accelerator when there is one (else on CPU).

Per backend (JAX and torch by default, each in a child process with ``KERAS_BACKEND``),
one model compiled with Adam (state = weights + optimizer variables), callbacks driven
by hand with ``--steps`` real ``train_on_batch`` steps between saves; every epoch
improves (decreasing fake ``val_loss``). Contenders, one after the other on the same
model: ``CkptCallback`` (``snapshot_to="auto"`` and ``"host"``),
``keras.callbacks.ModelCheckpoint(save_best_only=True)`` and, where it imports,
``keras.callbacks.OrbaxCheckpoint(save_best_only=True, save_on_background=True)``.

For each contender, the time ``on_epoch_end`` blocks the training thread:

* first save of the run (counted in the totals);
* ``--idle`` saves after the previous write was waited for (the wait is not timed);
* ``--b2b`` saves back to back: nothing waited for, a write may still run;
* all saves together, against ModelCheckpoint's; ``on_train_end``'s wait apart;

and memory, in copies of the state, sampled every millisecond by a thread: the peak
growth of accelerator memory (JAX ``Device.memory_stats()["bytes_in_use"]``,
``torch.cuda.memory_allocated()``) and of the process' RSS (psutil) over the
contender's run, against the level just before it, and the RSS growth left after
``on_train_end``. ``model.get_weights()`` (median of 3) is the reference cost of one
host copy.

Run: ``python benchmarks/bench_gpu.py [--backends jax,torch]
[--model resnet50|dense|mobilenet|small] [--idle 4] [--b2b 6] [--steps 3] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

KEY = "val_loss"


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class Sampler:
    """Samples host RSS and accelerator bytes in a thread; peaks since :meth:`reset`."""

    def __init__(self, device_bytes) -> None:
        self.device_bytes = device_bytes
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reset()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def now(self) -> tuple[int, int]:
        return _rss(), self.device_bytes()

    def reset(self) -> tuple[int, int]:
        with self.lock:
            self.base = self.now()
            self.peak = list(self.base)
        return self.base

    def _loop(self) -> None:
        while not self.stop.wait(0.001):
            host, dev = self.now()
            with self.lock:
                self.peak[0] = max(self.peak[0], host)
                self.peak[1] = max(self.peak[1], dev)


def _device_probe():
    """``(name of the accelerator or None, () -> bytes in use on it)``."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return None, lambda: 0
        return device.device_kind, lambda: int(device.memory_stats()["bytes_in_use"])
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None, lambda: 0
        return torch.cuda.get_device_name(0), lambda: int(torch.cuda.memory_allocated())
    return None, lambda: 0


def _model(name: str):
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    if name == "resnet50":
        model = keras.applications.ResNet50(weights=None, classifier_activation=None)
        x, y = rng.random((16, 224, 224, 3), dtype="float32"), rng.integers(0, 1000, 16)
    elif name == "dense":  # about 0.6 GB of weights, 2 GB with Adam
        model = keras.Sequential(
            [keras.Input((8192,))]
            + [keras.layers.Dense(8192, activation="relu") for _ in range(2)]
            + [keras.layers.Dense(10)]
        )
        x, y = rng.random((64, 8192), dtype="float32"), rng.integers(0, 10, 64)
    elif name == "mobilenet":  # MobileNetV2 at 96x96 (the variables of 224x224)
        model = keras.applications.MobileNetV2(
            weights=None, input_shape=(96, 96, 3), classifier_activation=None
        )
        x, y = rng.random((4, 96, 96, 3), dtype="float32"), rng.integers(0, 1000, 4)
    else:  # small: a CPU smoke run
        model = keras.Sequential(
            [keras.Input((512,))]
            + [keras.layers.Dense(1024, activation="relu") for _ in range(2)]
            + [keras.layers.Dense(10)]
        )
        x, y = rng.random((32, 512), dtype="float32"), rng.integers(0, 10, 32)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, x, y


def _contenders(folder: Path) -> dict[str, Any]:
    import keras
    from cvml_ckpt import CkptCallback

    made: dict[str, Any] = {
        "training only": keras.callbacks.Callback,  # the steps' own memory peaks
        "cvml auto": lambda: CkptCallback(folder / "auto", {KEY: "min"}),
        "cvml host": lambda: CkptCallback(folder / "host", {KEY: "min"}, snapshot_to="host"),
        "ModelCheckpoint": lambda: keras.callbacks.ModelCheckpoint(
            str(folder / "mc" / "best.keras"), monitor=KEY, save_best_only=True
        ),
    }
    if hasattr(keras.callbacks, "OrbaxCheckpoint"):
        made["Orbax"] = lambda: keras.callbacks.OrbaxCheckpoint(
            str(folder / "orbax"), monitor=KEY, save_best_only=True, save_on_background=True
        )
    return made


def _wait(cb) -> None:
    if hasattr(cb, "wait_for_background"):
        cb.wait_for_background()
    elif hasattr(cb, "wait_until_finished"):
        cb.wait_until_finished()


def child(args) -> dict[str, Any]:
    import keras
    import numpy as np

    model, x, y = _model(args.model)
    for _ in range(2):  # compile the train step
        model.train_on_batch(x, y)
    accelerator, device_bytes = _device_probe()
    variables = list(model.weights) + list(model.optimizer.variables)
    state = sum(int(np.prod(v.shape)) * np.dtype(str(v.dtype)).itemsize for v in variables)

    def steps() -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = model.train_on_batch(x, y)
        float(np.asarray(loss).reshape(-1)[0])  # the steps ran
        return (time.perf_counter() - start) / args.steps

    step = statistics.median(steps() for _ in range(3))
    gw = []
    for _ in range(3):
        start = time.perf_counter()
        model.get_weights()
        gw.append(time.perf_counter() - start)
    get_weights = statistics.median(gw)
    sampler = Sampler(device_bytes)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-", dir=args.dir) as tmp:
        # Untimed: the libraries' first-use costs (h5py, zip) go to no contender.
        model.save(Path(tmp) / "warmup.keras")
        keras.models.load_model(Path(tmp) / "warmup.keras")
        (Path(tmp) / "warmup.keras").unlink()
        for name, make in _contenders(Path(tmp)).items():
            try:
                rows[name] = _measure(make, model, steps, sampler, args, state)
            except Exception as exc:  # e.g. an orbax that this Keras cannot use
                rows[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            _release_freed()
    sampler.stop.set()
    return {
        "backend": keras.backend.backend(), "keras": keras.__version__, "model": args.model,
        "accelerator": accelerator or f"none (CPU: {platform.processor() or platform.machine()})",
        "state_mb": state / 1e6, "step_ms": step * 1e3, "get_weights_ms": get_weights * 1e3,
        "rows": rows,
    }


def _release_freed() -> None:
    """Collect, and give freed heap back to the OS, so each contender starts level."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _measure(make, model, steps, sampler, args, state) -> dict[str, Any]:
    _release_freed()
    cb = make()
    cb.set_model(model)
    base_host, base_dev = sampler.reset()
    cb.on_train_begin({})
    first: float | None = None
    idle, b2b, waits = [], [], []
    epoch = 0
    for phase, count in (("idle", args.idle), ("b2b", args.b2b)):
        for _ in range(count):
            steps()
            if phase == "idle":
                start = time.perf_counter()
                _wait(cb)
                waits.append(time.perf_counter() - start)
            start = time.perf_counter()
            cb.on_epoch_end(epoch, {KEY: 1.0 / (epoch + 1)})
            took = time.perf_counter() - start
            if first is None:
                first = took
            else:
                (idle if phase == "idle" else b2b).append(took)
            epoch += 1
    start = time.perf_counter()
    cb.on_train_end({})
    end_wait = time.perf_counter() - start
    peak_host, peak_dev = sampler.peak
    counts = dict(getattr(cb, "snapshot_counts", {}))
    if hasattr(cb, "worker"):
        counts["superseded"] = len(cb.worker.superseded)
    del cb
    _release_freed()
    after_host, _ = sampler.now()
    return {
        "first_s": first, "idle_median_s": statistics.median(idle) if idle else None,
        "b2b_median_s": statistics.median(b2b) if b2b else None,
        "total_s": (first or 0) + sum(idle) + sum(b2b), "end_wait_s": end_wait,
        "idle_waits_s": [round(w, 4) for w in waits],
        "device_peak_copies": (peak_dev - base_dev) / state,
        "host_peak_copies": (peak_host - base_host) / state,
        "host_after_copies": (after_host - base_host) / state,
        "counts": counts,
    }


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def report(result: dict[str, Any]) -> None:
    rows = result["rows"]
    print(
        f"\n{result['backend']} (Keras {result['keras']}), {result['model']}, "
        f"state {result['state_mb']:.0f} MB, step {result['step_ms']:.1f} ms, "
        f"get_weights() {result['get_weights_ms']:.1f} ms, accelerator: {result['accelerator']}"
    )
    mc = rows.get("ModelCheckpoint", {})
    control = rows.get("training only", {})
    gw = result["get_weights_ms"] / 1e3
    head = ("contender", "first s", "idle med s", "(x gw)", "b2b med s", "(x gw)", "total s",
            "(x MC)", "end wait s", "dev peak", "host peak", "host after",
            "shadow/device/host/skipped/superseded")
    print(" | ".join(head))
    for name, r in rows.items():
        if "error" in r:
            print(f"{name} | unavailable: {r['error']}")
            continue
        ratio = r["total_s"] / mc["total_s"] if mc.get("total_s") else None
        if name == "training only":
            print(f"{name} | peaks of the steps alone: device "
                  f"{_fmt(r['device_peak_copies'], '+.2f')}, host "
                  f"{_fmt(r['host_peak_copies'], '+.2f')} copies")
            continue
        print(" | ".join([
            name, _fmt(r["first_s"]), _fmt(r["idle_median_s"], ".4f"),
            _fmt(r["idle_median_s"] / gw if r["idle_median_s"] else None, ".2f"),
            _fmt(r["b2b_median_s"], ".4f"),
            _fmt(r["b2b_median_s"] / gw if r["b2b_median_s"] else None, ".2f"),
            _fmt(r["total_s"]), _fmt(ratio, ".2f"), _fmt(r["end_wait_s"]),
            _fmt(r["device_peak_copies"] - control.get("device_peak_copies", 0), "+.2f"),
            _fmt(r["host_peak_copies"] - control.get("host_peak_copies", 0), "+.2f"),
            _fmt(r["host_after_copies"], "+.2f"),
            "/".join(str(r["counts"].get(k, "")) for k in
                     ("shadow", "device", "host", "skipped", "superseded")),
        ]))
    print("(memory in copies of the state, peaks beyond those of 'training only', the same "
          "steps without saves; x gw = times get_weights(); x MC = times ModelCheckpoint's "
          "total)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="jax,torch")
    parser.add_argument(
        "--model", default="resnet50", choices=["resnet50", "dense", "mobilenet", "small"]
    )
    parser.add_argument("--idle", type=int, default=4)
    parser.add_argument("--b2b", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dir", default=None, help="folder for the files (default: temp)")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--timeout", type=float, default=1800, help="per backend, seconds")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    results = []
    for backend in args.backends.split(","):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        if backend != "jax":  # orbax imports JAX: keep it off the accelerator torch uses
            env.setdefault("JAX_PLATFORMS", "cpu")
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--idle",
               str(args.idle), "--b2b", str(args.b2b), "--steps", str(args.steps)]
        if args.dir:
            cmd += ["--dir", args.dir]
        try:
            out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                 timeout=args.timeout)
        except subprocess.TimeoutExpired as exc:
            print(f"\n{backend}: stopped after {args.timeout:.0f} s\n{str(exc.stdout)[-2000:]}")
            continue
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            print(f"\n{backend}: failed (exit {out.returncode})\n{out.stderr[-3000:]}")
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        results.append(result)
        report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
