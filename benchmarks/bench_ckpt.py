"""CkptCallback vs Keras' own checkpointing, side by side, for two models, in one run.

Models (both compiled with Adam, so a full save holds about three times the weights):
MobileNetV2 (``keras.applications.MobileNetV2(weights=None)``, 1000 classes, built on a
96x96x3 input: the variables are the same as at 224x224x3, the steps are faster) and a
Dense stack of about 200 MB of weights (3 x Dense(4096) on a 4096 input, plus Dense(10)).

Measured, all in this process (except the RSS figure, below):

* blocking per save: the time ``on_epoch_end`` holds the training thread on an epoch
  that saves, for CkptCallback, ``keras.callbacks.ModelCheckpoint(save_best_only=True)``
  (``.keras``), ``keras.callbacks.OrbaxCheckpoint(save_on_background=True)`` (when the
  installed Keras has it and ``orbax-checkpoint`` imports), and a bare
  ``model.get_weights()``. Each round saves once with each contender, in a rotating
  order, with ``--steps`` real ``train_on_batch`` steps after each save (a background
  write overlaps them). Before a timed save every background write still running is
  waited for; that wait is printed, not counted as blocking. Every epoch "improves":
  the callbacks get decreasing fake ``val_loss`` logs. First save (warm-up) reported
  apart, then the median of ``--saves`` rounds.
* background write: CkptCallback's ``write_seconds`` from its manifest, for saves made
  with the training thread idle, alternating with ``model.save`` of the same model to
  the same folder (``log_dir/ckpt``); median of ``--saves`` pairs after one warm-up.
  The write times of the saves that overlapped training are printed for reference.
* RSS growth of the training process (psutil) over ``--rss-saves`` CkptCallback saves
  (training steps in between, background write done at the end), next to one model
  copy (bytes of the model's variables + the optimizer's variables). Measured in a fresh
  child process per model, so memory freed by the other contenders does not hide it.

Targets (issue): CkptCallback blocking <= 0.1x ModelCheckpoint and <= 2x get_weights();
background write no slower than model.save (ratio <= 1.0); RSS growth <= one model copy.

Run: ``python benchmarks/bench_ckpt.py [--saves 5] [--steps 2] [--rss-saves 10] [--dir DIR]``
or ``nox -s bench -- benchmarks/bench_ckpt.py`` (defaults).

``--fit`` measures instead a whole ``model.fit`` of MobileNetV2 (``--fit-steps`` steps of
batch 8, one epoch, after a warm-up fit) as a user meets it: with no callback, with
``CkptCallback(backup_every_steps=20)`` (a fresh callback and folder per fit, so its
first save is included, and its end: the last write awaited, the backup deleted),
``keras.callbacks.BackupAndRestore(save_freq=20)`` and, where it runs,
``OrbaxCheckpoint(save_freq=20)``; ``--fit-rounds`` rounds in a rotating order,
medians, each against no callback (target for CkptCallback: <= 1.02).

``--as-user`` measures saves as a user meets them, each contender in a fresh child
process on MobileNetV2: ``--user-saves`` saves (every epoch improves), with
``--idle-steps`` training steps between saves, then more steps while a write of the
callback still runs (idle: a save every few minutes finds the last write done; training
goes on meanwhile, nothing waits) and, separately, one step between saves (back to back:
a write still runs, so the save is skipped or replaced);
nothing waits for a background write before a timed save, and the first saves count.
Contenders: CkptCallback on a model whose optimizer is built, ``CkptCallback, 1st fit``
(a new optimizer, built by the first step after train begin, as in a first ``fit`` on
TensorFlow), ``CkptCallback .weights.h5`` (``save_weights_only``: Keras writes the file
a variable at a time), ModelCheckpoint and ``get_weights()``.
Printed per contender: blocking of ``on_train_begin``, of the first three saves, the
median of the later ones, the total of train begin and all saves, the end of training
(``on_train_end``: CkptCallback waits for its last write there), and RSS growth at peak
and after training ends, in copies of weights + optimizer state; the peak also beyond
the training steps' own peak (measured after train end, no checkpointer), since a write
overlaps a step's transient memory. Targets (issue 17): a save that finds a write
running, median <= 2x ``get_weights()``; total <= 0.1x ModelCheckpoint's total; peak
growth <= 1.1 copies, given back after training.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # orbax imports jax: no accelerator probing

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from cvml_ckpt import CkptCallback  # noqa: E402

from cvml_core.artifacts.manifest import read_manifest  # noqa: E402
from cvml_core.keras_compat import keras  # noqa: E402

MOBILENET_INPUT = (96, 96, 3)
KEY = "val_loss"
BEST_FILE = f"best_{KEY}.keras"


# -- models --------------------------------------------------------------------------


def mobilenet():
    model = keras.applications.MobileNetV2(  # logits out: same variables, one loss
        weights=None, input_shape=MOBILENET_INPUT, classifier_activation=None
    )
    x = np.random.default_rng(0).random((4, *MOBILENET_INPUT)).astype("float32")
    return model, x, np.array([1, 2, 3, 4])


def dense_stack():
    model = keras.Sequential(
        [keras.Input((4096,))]
        + [keras.layers.Dense(4096, activation="relu") for _ in range(3)]
        + [keras.layers.Dense(10)]
    )
    x = np.random.default_rng(0).random((8, 4096)).astype("float32")
    return model, x, np.arange(8) % 10


MODELS = {
    f"mobilenet_v2 {MOBILENET_INPUT[0]}x{MOBILENET_INPUT[1]}": mobilenet,
    "dense ~200MB": dense_stack,
}


def build(factory):
    keras.utils.set_random_seed(0)
    model, x, y = factory()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    for _ in range(3):  # builds the optimizer state; warms the train step up
        model.train_on_batch(x, y)
    return model, x, y


def copy_bytes(model) -> int:
    """One copy of the model: its variables (weights) plus the optimizer's variables."""
    weights = sum(np.asarray(v).nbytes for v in model.get_weights())
    optimizer = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                    for v in model.optimizer.variables)
    return weights + optimizer


def rss() -> int:
    return psutil.Process().memory_info().rss


class PeakRSS:
    """The process' peak RSS, sampled by a daemon thread from construction to ``stop()``."""

    def __init__(self, every: float) -> None:
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, rss())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- CkptCallback's manifest -----------------------------------------------------------


def write_seconds(cb, epoch: int) -> float | None:
    """``write_seconds`` of the ``best_val_loss`` file written for (0-based) ``epoch``."""
    try:
        data = read_manifest(cb.folder)
    except (OSError, ValueError):
        return None
    for entry in reversed(data.get("artifacts", [])):
        if Path(str(entry.get("path", ""))).name == BEST_FILE and entry.get("epoch") == epoch + 1:
            value = (entry.get("details") or {}).get("write_seconds")
            return float(value) if value is not None else None
    return None


# -- contenders --------------------------------------------------------------------


class Contender:
    """One way of saving: ``save(epoch, logs)`` is timed; ``wait()`` is not."""

    def __init__(self, name: str, save, wait=lambda: None, end=lambda: None):
        self.name, self._save, self.wait, self.end = name, save, wait, end
        self.block: list[float] = []  # [0] is the warm-up
        self.waits: list[float] = []
        self.error: str | None = None

    def timed_save(self, epoch: int, logs: dict[str, float]) -> None:
        start = time.perf_counter()
        self._save(epoch, logs)
        self.block.append(time.perf_counter() - start)


def orbax_contender(model, folder: Path) -> Contender | str:
    """OrbaxCheckpoint, or the reason it is unavailable."""
    if not hasattr(keras.callbacks, "OrbaxCheckpoint"):
        return f"keras {keras.__version__} has no keras.callbacks.OrbaxCheckpoint"
    try:
        import orbax.checkpoint  # noqa: F401
    except Exception as exc:  # ImportError, or a broken jax install
        return f"orbax-checkpoint does not import ({type(exc).__name__}: {exc})"
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)  # per-save OCDBT merge notes
    except ImportError:
        pass
    try:
        cb = keras.callbacks.OrbaxCheckpoint(
            str(folder), monitor=KEY, mode="min", save_best_only=True, save_on_background=True
        )
        cb.set_model(model)
        cb.on_train_begin({})
    except Exception as exc:
        return f"OrbaxCheckpoint failed to start ({type(exc).__name__}: {exc})"
    return Contender("OrbaxCheckpoint", cb.on_epoch_end, cb.wait_until_finished,
                     lambda: cb.on_train_end({}))


def run(name: str, factory, args, root: Path) -> dict[str, Any]:
    print(f"[{name}] building", flush=True)
    model, x, y = build(factory)
    out: dict[str, Any] = {"copy_mb": copy_bytes(model) / 1e6}
    log_dir = root / name.split()[0]

    cb = CkptCallback(log_dir, {KEY: "min"})
    cb.set_model(model)
    cb.on_train_begin({})
    ckpt = Contender("CkptCallback", cb.on_epoch_end, cb.wait_for_background)
    mc_cb = keras.callbacks.ModelCheckpoint(
        str(log_dir / "keras" / "best.keras"), monitor=KEY, mode="min", save_best_only=True
    )
    mc_cb.set_model(model)
    mc_cb.on_train_begin({})
    mc = Contender("ModelCheckpoint .keras", mc_cb.on_epoch_end)
    gw = Contender("model.get_weights()", lambda epoch, logs, m=model: m.get_weights())
    orbax = orbax_contender(model, log_dir / "orbax")
    contenders = [ckpt, mc, gw] + ([orbax] if isinstance(orbax, Contender) else [])
    out["orbax_unavailable"] = orbax if isinstance(orbax, str) else None

    # Blocking: one save per contender per round, rotating the order, training between.
    overlapped: list[float] = []
    rounds = args.saves + 1
    epoch = 0
    for r in range(rounds):
        print(f"[{name}] blocking round {r + 1}/{rounds}", flush=True)
        k = r % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            if c.error:
                continue
            for other in contenders:  # no background write of anyone under a timed save
                start = time.perf_counter()
                try:
                    other.wait()
                except Exception as exc:
                    other.error = f"{type(exc).__name__}: {exc}"
                other.waits.append(time.perf_counter() - start)
            try:
                c.timed_save(r, {KEY: 1000.0 - r, "loss": 1000.0 - r})
            except Exception as exc:
                c.error = f"{type(exc).__name__}: {exc}"
                continue
            if c is ckpt:
                epoch = r
            for _ in range(args.steps):
                model.train_on_batch(x, y)
        ckpt.wait()
        seconds = write_seconds(cb, epoch)
        if seconds is not None and r > 0:
            overlapped.append(seconds)
    for c in contenders:
        try:
            c.wait()
            c.end()
        except Exception as exc:
            c.error = c.error or f"{type(exc).__name__}: {exc}"
    out["contenders"] = {
        c.name: {
            "first": c.block[0] if c.block else None,
            "median": med(c.block[1:]),
            "max_wait": max(c.waits) if c.waits else 0.0,
            "error": c.error,
        }
        for c in contenders
    }
    out["overlapped_write"] = med(overlapped)

    # Background write (training thread idle) vs model.save, alternating, same folder.
    idle, plain, synced = [], [], []
    target = Path(cb.folder) / "bench_model_save.keras"
    write_error = ckpt.error
    for i in range(args.saves + 1):
        print(f"[{name}] write round {i + 1}/{args.saves + 1}", flush=True)
        epoch = rounds + i
        seconds = None
        if write_error is None:
            try:
                cb.on_epoch_end(epoch, {KEY: -1.0 - i, "loss": -1.0 - i})
                cb.wait_for_background()
                seconds = write_seconds(cb, epoch)
            except Exception as exc:
                write_error = f"{type(exc).__name__}: {exc}"
        start = time.perf_counter()
        model.save(target)
        plain_seconds = time.perf_counter() - start
        fd = os.open(target, os.O_RDONLY)  # CkptCallback's write is fsynced too
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        synced_seconds = time.perf_counter() - start
        if i > 0:
            if seconds is not None:
                idle.append(seconds)
            plain.append(plain_seconds)
            synced.append(synced_seconds)
        model.train_on_batch(x, y)
    best = Path(cb.folder) / BEST_FILE
    out["ckpt_file_mb"] = best.stat().st_size / 1e6 if best.exists() else None
    out["save_file_mb"] = target.stat().st_size / 1e6
    target.unlink()
    try:
        cb.on_train_end({})
    except Exception as exc:
        write_error = write_error or f"{type(exc).__name__}: {exc}"
    out["write_error"] = write_error
    out["idle_write"] = idle
    out["model_save"] = plain
    out["model_save_fsync"] = synced
    del model, cb, mc_cb, contenders, orbax, ckpt, mc, gw
    keras.backend.clear_session()
    gc.collect()
    return out


# -- RSS, in a child process -----------------------------------------------------------


def rss_child(name: str, args) -> None:
    model, x, y = build(MODELS[name])
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-ckpt-rss-") as tmp:
        if args.rss_checkpointer == "keras":
            cb = keras.callbacks.ModelCheckpoint(
                str(Path(tmp) / "best.keras"), monitor=KEY, mode="min", save_best_only=True
            )
            cb.wait_for_background = lambda: None
        else:
            cb = CkptCallback(tmp, {KEY: "min"})
        cb.set_model(model)
        cb.on_train_begin({})
        gc.collect()
        sampler = PeakRSS(0.01)
        base = sampler.base
        for i in range(args.rss_saves):
            cb.wait_for_background()
            cb.on_epoch_end(i, {KEY: 1000.0 - i, "loss": 1000.0 - i})
            for _ in range(args.steps):
                model.train_on_batch(x, y)
        cb.wait_for_background()
        gc.collect()
        end = rss()
        sampler.stop()
        peak = max(sampler.peak, end)
        cb.on_train_end({})
    print(json.dumps({"growth_mb": (end - base) / 1e6, "peak_mb": (peak - base) / 1e6,
                      "copy_mb": copy_bytes(model) / 1e6}))


def rss_growth(name: str, args, checkpointer: str = "ckpt") -> dict[str, Any]:
    print(f"[{name}] RSS over {args.rss_saves} saves of {checkpointer} (child process)",
          flush=True)
    cmd = [sys.executable, __file__, "--rss-child", name, "--rss-saves", str(args.rss_saves),
           "--steps", str(args.steps), "--rss-checkpointer", checkpointer]
    cmd += ["--dir", args.dir] if args.dir else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"child exited {proc.returncode}: {proc.stderr.strip()[-400:]}"}
    return json.loads(lines[-1])


# -- report -----------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def verdict(ratio: float | None, limit: float, noise: float = 0.0) -> str:
    if ratio is None:
        return "n/a"
    text = f"{ratio:.3f}x {'PASS' if ratio <= limit else 'MISS'}"
    if ratio > limit and ratio <= limit * (1 + noise):
        text += " (noise?)"
    return text


def report(rows: dict[str, dict[str, Any]], args) -> None:
    names = list(rows)
    width = 26
    lines: list[str] = []

    def line(label: str, cells: list[str]) -> None:
        lines.append(f"{label:<46}" + "".join(f"{c:>{width}}" for c in cells))

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    line("", names)
    line("one model copy MB (weights + Adam state)",
         [fmt(rows[n]["copy_mb"], ".1f") for n in names])
    line("file MB: CkptCallback / model.save",
         [f"{fmt(rows[n]['ckpt_file_mb'], '.1f')} / {fmt(rows[n]['save_file_mb'], '.1f')}"
          for n in names])
    lines.append(f"blocking per save, s: median of {args.saves} (first save)")
    contenders = list(rows[names[0]]["contenders"])
    for c in ["CkptCallback", "ModelCheckpoint .keras", "OrbaxCheckpoint", "model.get_weights()"]:
        cells = []
        for n in names:
            r = rows[n]["contenders"].get(c)
            if r is None:
                cells.append("unavailable")
            elif r["error"]:
                cells.append("failed")
            else:
                cells.append(f"{fmt(r['median'], '.4f')} ({fmt(r['first'], '.3f')})")
        line(f"  {c}", cells)
    for c in ("CkptCallback", "OrbaxCheckpoint"):
        if c in contenders:
            line(f"  untimed wait, prev. write: {c}",
                 [fmt(rows[n]["contenders"][c]["max_wait"], ".3f") for n in names])
    lines.append(f"background write vs model.save, s: median (min-max) of {args.saves}")

    def spread(values: list[float]) -> str:
        if not values:
            return "n/a"
        return f"{med(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    line("  CkptCallback write_seconds, idle", [spread(rows[n]["idle_write"]) for n in names])
    line("  CkptCallback write_seconds, overlapping",
         [fmt(rows[n]["overlapped_write"]) for n in names])
    line("  model.save, same folder", [spread(rows[n]["model_save"]) for n in names])
    line("  model.save + fsync (the durability of ours)",
         [spread(rows[n]["model_save_fsync"]) for n in names])
    def rss_cell(r: dict[str, Any]) -> str:
        if "error" in r:
            return "failed"
        return f"{fmt(r.get('growth_mb'), '.1f')} ({fmt(r.get('peak_mb'), '.1f')})"

    line(f"RSS growth over {args.rss_saves} saves MB (peak)",
         [rss_cell(rows[n]["rss"]) for n in names])
    line("  same, ModelCheckpoint .keras (reference)",
         [rss_cell(rows[n]["rss_keras"]) for n in names])
    lines.append("targets")

    def block(n: str, c: str) -> float | None:
        r = rows[n]["contenders"].get(c)
        return None if r is None or r["error"] else r["median"]

    line("  blocking <= 0.1x ModelCheckpoint",
         [verdict(ratio(block(n, "CkptCallback"), block(n, "ModelCheckpoint .keras")), 0.1)
          for n in names])
    line("  blocking <= 2x get_weights()",
         [verdict(ratio(block(n, "CkptCallback"), block(n, "model.get_weights()")), 2.0)
          for n in names])
    if "OrbaxCheckpoint" in contenders:
        line("  (info) blocking / OrbaxCheckpoint",
             [fmt(ratio(block(n, "CkptCallback"), block(n, "OrbaxCheckpoint")), ".3f", "x")
              for n in names])
    line("  background write <= 1.0x model.save + fsync",
         [verdict(ratio(med(rows[n]["idle_write"]), med(rows[n]["model_save_fsync"])), 1.0, 0.1)
          for n in names])
    line("  (info) background write / model.save without fsync",
         [fmt(ratio(med(rows[n]["idle_write"]), med(rows[n]["model_save"])), ".3f", "x")
          for n in names])
    line("  RSS growth <= 1 model copy",
         [verdict(ratio(rows[n]["rss"].get("growth_mb"), rows[n]["copy_mb"]), 1.0)
          if "error" not in rows[n]["rss"] else "n/a" for n in names])
    print("\n" + "\n".join(lines))
    for n in names:
        if rows[n]["orbax_unavailable"]:
            print(f"{n}: OrbaxCheckpoint unavailable: {rows[n]['orbax_unavailable']}")
        for c, r in rows[n]["contenders"].items():
            if r["error"]:
                print(f"{n}: {c} failed: {r['error']}")
        if rows[n]["write_error"]:
            print(f"{n}: CkptCallback write measurement failed: {rows[n]['write_error']}")
        if "error" in rows[n]["rss"]:
            print(f"{n}: RSS child failed: {rows[n]['rss']['error']}")
    print(
        f"Training steps between saves: {args.steps}. \"noise?\": a write ratio up to 1.1x; "
        "compare the min-max spreads."
    )


# -- whole fit with backups ----------------------------------------------------------

BACKUP_EVERY = 20


def fit_contenders(folder: Path) -> dict[str, Any]:
    """name -> a function giving the callbacks of one fit (fresh ones, fresh folders)."""
    runs = iter(range(10**6))

    def fresh(label: str) -> Path:
        return folder / f"{label}-{next(runs)}"

    contenders: dict[str, Any] = {
        "no callback": lambda: [],
        f"CkptCallback(backup_every_steps={BACKUP_EVERY})": lambda: [CkptCallback(
            fresh("ckpt"), {"loss": "min"}, skip_from_start=10**9,  # backups only
            backup_every_steps=BACKUP_EVERY)],
        f"BackupAndRestore(save_freq={BACKUP_EVERY})": lambda: [
            keras.callbacks.BackupAndRestore(str(fresh("bar")), save_freq=BACKUP_EVERY)],
    }
    probe = orbax_contender(build(mobilenet)[0], fresh("orbax-probe"))
    if isinstance(probe, str):
        print(f"OrbaxCheckpoint unavailable: {probe}", flush=True)
    else:
        probe.end()
        contenders[f"OrbaxCheckpoint(save_freq={BACKUP_EVERY})"] = lambda: [
            keras.callbacks.OrbaxCheckpoint(str(fresh("orbax")), save_freq=BACKUP_EVERY)]
    return contenders


def whole_fit(args) -> None:
    """Times whole fits with each contender; prints the medians and ratios."""
    model, _, _ = build(mobilenet)
    rng = np.random.default_rng(0)
    x = rng.random((8 * args.fit_steps, *MOBILENET_INPUT)).astype("float32")
    y = rng.integers(0, 1000, len(x))
    model.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0)  # warm-up
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-fit-") as tmp:
        contenders = fit_contenders(Path(tmp))
        names = list(contenders)
        for round_ in range(args.fit_rounds):
            order = names[round_ % len(names):] + names[: round_ % len(names)]
            for name in order:
                callbacks = contenders[name]()
                gc.collect()
                start = time.perf_counter()
                model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=callbacks)
                times.setdefault(name, []).append(time.perf_counter() - start)
                print(f"  round {round_ + 1} {name}: {times[name][-1]:.2f} s", flush=True)
    base = statistics.median(times["no callback"])
    print(f"\nwhole fit, MobileNetV2 {MOBILENET_INPUT}, {args.fit_steps} steps of batch 8 "
          f"(medians of {args.fit_rounds}):")
    for name in names:
        t = statistics.median(times[name])
        print(f"  {name:<42} {t:8.2f} s   {t / base:6.3f}x no callback   "
              f"(min-max {min(times[name]):.2f}-{max(times[name]):.2f})")


# -- saves as a user meets them ------------------------------------------------------

USER_CONTENDERS = ("CkptCallback", "CkptCallback, 1st fit", "ModelCheckpoint .keras",
                   "model.get_weights()", "CkptCallback .weights.h5")


def user_child(contender: str, steps: int, args) -> None:
    """One contender in this fresh process: prints its blocking and RSS as JSON."""
    model, x, y = build(mobilenet)
    first_fit = contender == "CkptCallback, 1st fit"
    if first_fit:
        # A new optimizer, built by the first step after train begin, as in a first fit
        # on TensorFlow.
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-ckpt-user-") as tmp:
        if contender.startswith("CkptCallback"):
            cb: Any = CkptCallback(tmp, {KEY: "min"},
                                   save_weights_only=contender.endswith(".weights.h5"))
        elif contender == "ModelCheckpoint .keras":
            cb = keras.callbacks.ModelCheckpoint(
                str(Path(tmp) / "best.keras"), monitor=KEY, mode="min", save_best_only=True)
        else:
            cb = keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: model.get_weights())
        cb.set_model(model)
        if not first_fit:
            gc.collect()
            sampler = PeakRSS(0.002)
        start = time.perf_counter()
        cb.on_train_begin({})
        begin = time.perf_counter() - start
        if first_fit:  # the optimizer's state is not the callback's: measured from here
            model.train_on_batch(x, y)
            gc.collect()
            sampler = PeakRSS(0.002)
        base, copy = sampler.base, copy_bytes(model)
        block, busy, extra_steps = [], [], 0
        worker = getattr(cb, "worker", None)  # CkptCallback's background writer
        for i in range(args.user_saves):
            for _ in range(steps):
                model.train_on_batch(x, y)
            while steps > 1 and worker is not None and worker.busy:
                model.train_on_batch(x, y)  # idle: the write ends while training goes on
                extra_steps += 1
            busy.append(bool(worker is not None and worker.busy))  # a write still runs
            start = time.perf_counter()
            cb.on_epoch_end(i, {KEY: 1000.0 - i, "loss": 1000.0 - i})
            block.append(time.perf_counter() - start)
        start = time.perf_counter()
        cb.on_train_end({})
        end_seconds = time.perf_counter() - start
        sampler.stop()
        peak = sampler.peak
        gc.collect()
        after = rss()
        counts = getattr(cb, "snapshot_counts", None)
        # The training steps' own peak, with no checkpointer: what the peak above holds
        # besides the contender's memory (a write overlaps a step's transients).
        alone = PeakRSS(0.002)
        for _ in range(max(steps, 3)):
            model.train_on_batch(x, y)
        alone.stop()
    print(json.dumps({"block": block, "begin": begin, "end": end_seconds,
                      "peak": (peak - base) / copy,
                      "train_peak": (alone.peak - alone.base) / copy,
                      "after": (after - base) / copy, "copy_mb": copy / 1e6,
                      "counts": counts, "extra_steps": extra_steps, "busy": busy}))


def as_user(args) -> None:
    """Every contender, idle and back to back, each in a fresh child; prints ratios."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # freed blocks leave the RSS
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for case, steps in (("idle", args.idle_steps), ("back to back", 1)):
        for contender in USER_CONTENDERS:
            print(f"[{case}] {contender} (child process)", flush=True)
            cmd = [sys.executable, __file__, "--user-child", contender, "--steps", str(steps),
                   "--user-saves", str(args.user_saves)] + (["--dir", args.dir] if args.dir else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                results[case, contender] = {"error": proc.stderr.strip()[-400:]}
            else:
                results[case, contender] = json.loads(lines[-1])
    for case, steps in (("idle", args.idle_steps), ("back to back", 1)):
        print(f"\n{case}: {steps} training step(s) between {args.user_saves} saves, "
              "MobileNetV2; seconds blocking the training thread")
        print(f"  {'':<24}{'train begin':>12}{'first three':>20}{'median later':>14}"
              f"{'total':>8}{'train end':>11}{'peak copies':>13}{'beyond steps':>14}"
              f"{'after':>7}")
        for contender in USER_CONTENDERS:
            r = results[case, contender]
            if "error" in r:
                print(f"  {contender:<24} failed: {r['error']}")
                continue
            first = " ".join(f"{b:.3f}" for b in r["block"][:3])
            print(f"  {contender:<24}{r['begin']:>12.3f}{first:>20}"
                  f"{med(r['block'][3:]) or 0:>14.4f}{r['begin'] + sum(r['block']):>8.3f}"
                  f"{r['end']:>11.3f}{r['peak']:>13.2f}{r['peak'] - r['train_peak']:>14.2f}"
                  f"{r['after']:>7.2f}")
        keras_, gw = results[case, USER_CONTENDERS[2]], results[case, USER_CONTENDERS[3]]
        for name in (*USER_CONTENDERS[:2], USER_CONTENDERS[4]):
            ours = results[case, name]
            if any("error" in r for r in (ours, keras_, gw)):
                continue
            total = (ours["begin"] + sum(ours["block"])) / (keras_["begin"] + sum(keras_["block"]))
            print(f"  {name}: total (train begin and saves) / ModelCheckpoint's: "
                  f"{verdict(total, 0.1)} (target <= 0.1)")
            gw_median = med(gw["block"][3:]) or 1
            print(f"    median later save / get_weights(): "
                  f"{(med(ours['block'][3:]) or 0) / gw_median:.2f}")
            busy = [b for b, was_busy in zip(ours["block"], ours["busy"], strict=True) if was_busy]
            print(f"    median save while a write ran ({len(busy)} of {len(ours['block'])}) / "
                  f"get_weights(): {verdict((med(busy) or 0) / gw_median, 2.0) if busy else 'n/a'}"
                  " (target <= 2)")
            beyond = ours["peak"] - ours["train_peak"]
            print(f"    peak growth: {ours['peak']:.2f} copies, {verdict(beyond, 1.1)} beyond "
                  f"the training steps' own peak (target <= 1.1); after training: "
                  f"{ours['after']:.2f}; ModelCheckpoint beyond the steps' peak "
                  f"{keras_['peak'] - keras_['train_peak']:.2f}")
            print(f"    snapshots: {ours['counts']}; steps trained while a write ran "
                  f"(idle only): {ours['extra_steps']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=5, help="timed saves per contender")
    parser.add_argument("--steps", type=int, default=2, help="training steps between saves")
    parser.add_argument("--rss-saves", type=int, default=10, help="saves for the RSS figure")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--fit", action="store_true", help="whole fits with backups instead")
    parser.add_argument("--fit-steps", type=int, default=200, help="steps of each timed fit")
    parser.add_argument("--fit-rounds", type=int, default=3, help="timed fits per contender")
    parser.add_argument("--as-user", action="store_true",
                        help="saves as a user meets them (first ones, back to back, memory)")
    parser.add_argument("--user-saves", type=int, default=8, help="saves per --as-user run")
    parser.add_argument("--idle-steps", type=int, default=10,
                        help="steps between --as-user idle saves (about 1 s here)")
    parser.add_argument("--user-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss-checkpointer", default="ckpt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args)
        return
    if args.user_child:
        user_child(args.user_child, args.steps, args)
        return
    if args.as_user:
        print(f"keras {keras.__version__} ({keras.backend.backend()} backend), "
              f"{psutil.cpu_count()} CPUs", flush=True)
        as_user(args)
        return
    if args.fit:
        print(f"keras {keras.__version__} ({keras.backend.backend()} backend), "
              f"{psutil.cpu_count()} CPUs", flush=True)
        whole_fit(args)
        return
    print(f"keras {keras.__version__} ({keras.backend.backend()} backend), "
          f"{psutil.cpu_count()} CPUs; MobileNetV2 input {MOBILENET_INPUT}", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-ckpt-") as tmp:
        for name, factory in MODELS.items():
            rows[name] = run(name, factory, args, Path(tmp))
    for name in MODELS:
        rows[name]["rss"] = rss_growth(name, args)
        rows[name]["rss_keras"] = rss_growth(name, args, "keras")
    report(rows, args)


if __name__ == "__main__":
    main()
