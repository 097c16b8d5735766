"""Where a snapshot waits for the writer (device copy or host memory), and host memory
bounded across back-to-back saves. The device-memory query is injected
(``device_memory=``); on this CPU machine a "device copy" is ``keras.ops.copy``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from cvml_ckpt import CkptCallback

from cvml_core.artifacts.manifest import read_manifest
from cvml_core.keras_compat import keras

GB = 2**30


class KeepStates(keras.callbacks.Callback):
    """The weights and optimizer variables at each epoch end (1-based keys)."""

    def __init__(self):
        super().__init__()
        self.states = {}

    def on_epoch_end(self, epoch, logs=None):
        self.states[epoch + 1] = [np.array(v) for v in self.model.weights] + [
            np.array(v) for v in self.model.optimizer.variables
        ]


class Query:
    """An injected device-memory query: ``(free, total)``, and how often it was asked."""

    def __init__(self, free, total=80 * GB):
        self.answer = None if free is None else (free, total)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.answer


def assert_files_hold_their_epochs(tmp_path, states):
    """Each best file holds its epoch's state (``KeepStates``), bitwise; the manifest."""
    manifest = read_manifest(tmp_path / "ckpt")
    for path in sorted((tmp_path / "ckpt").glob("best_*.keras")):
        entry = [a for a in manifest["artifacts"] if Path(a["path"]).name == path.name][-1]
        loaded = keras.models.load_model(path)
        got = list(loaded.weights) + list(loaded.optimizer.variables)
        for a, b in zip(got, states.states[entry["epoch"]], strict=True):
            np.testing.assert_array_equal(np.array(a), b)
    return manifest


def train(tmp_path, tiny_model, tiny_data, epochs=6, **options):
    """Fit with every epoch improving ``loss``; check each file holds its epoch's state."""
    states = KeepStates()
    cb = CkptCallback(tmp_path, {"loss": "min"}, keep_top_k=None, **options)
    x, y = tiny_data
    model = tiny_model()
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=False,
              callbacks=[states, cb])
    assert_files_hold_their_epochs(tmp_path, states)
    return cb


@pytest.mark.parametrize(
    ("free", "device"),
    [(60 * GB, True), (1 * GB, False), (None, False)],
    ids=["room", "short: under a tenth of the device free", "host memory"],
)
def test_auto_keeps_a_device_copy_only_where_the_device_has_room(
    tmp_path, tiny_model, tiny_data, free, device
):
    query = Query(free, total=16 * GB)
    cb = train(tmp_path, tiny_model, tiny_data, device_memory=query)
    counts = cb.snapshot_counts
    assert counts["source"] <= 1 and query.calls >= 1
    if device:
        assert counts["device"] >= 1, counts
    else:
        assert counts["device"] == 0 and counts["shadow"] + counts["host"] >= 1, counts


def test_host_never_asks_the_device_and_device_needs_no_room(tmp_path, tiny_model, tiny_data):
    query = Query(80 * GB)
    cb = train(tmp_path / "host", tiny_model, tiny_data, snapshot_to="host", device_memory=query)
    assert query.calls == 0 and cb.snapshot_counts["device"] == 0
    cb = train(tmp_path / "device", tiny_model, tiny_data, snapshot_to="device",
               device_memory=Query(0))
    assert cb.snapshot_counts["device"] >= 1


class SourceThreads(CkptCallback):
    """Records the thread of each ``model.save`` of the shadow's source; the write of
    epoch 1 waits until epoch 3 has ended (the live model has moved on)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = []
        self.epoch_3_ended = threading.Event()

    def _save_source(self, path):
        self.threads.append(threading.current_thread())
        super()._save_source(path)

    def write(self, job):
        if job.epoch == 1:
            assert self.epoch_3_ended.wait(60)
        yield from super().write(job)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch == 2:
            self.epoch_3_ended.set()


def test_the_worker_builds_the_shadow_and_the_first_file_holds_its_epoch(
    tmp_path, tiny_model, tiny_data
):
    """On TensorFlow and torch the first save holds training only for a host copy: the
    worker saves the shadow's source from the live model (later, here after epoch 3)
    and the file still holds epoch 1's state, bitwise; a second fit does the same,
    then copies into the shadow. On JAX (whose fit keeps the state apart from the
    variables during an epoch) no source is saved: the first save takes host copies and
    the config, from which the worker builds the shadow."""
    states = KeepStates()
    cb = SourceThreads(tmp_path, {"loss": "min"}, keep_top_k=None)
    x, y = tiny_data
    model = tiny_model()
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, shuffle=False, callbacks=[states, cb])
    on_worker = keras.backend.backend() in ("tensorflow", "torch")
    if on_worker:
        assert cb.threads and all(t is not threading.main_thread() for t in cb.threads)
    else:
        assert not cb.threads  # JAX: the shadow is built from the config
    assert cb.snapshot_counts["source"] == 0, cb.snapshot_counts
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".tmp-")]

    class BuiltBeforeSecondSave(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 5:
                cb.worker.wait()  # the shadow built from the first save of this fit

    cb.epoch_3_ended.set()
    before = dict(cb.snapshot_counts)
    model.fit(x, y, initial_epoch=4, epochs=6, batch_size=16, verbose=0, shuffle=False,
              callbacks=[states, BuiltBeforeSecondSave(), cb])
    assert cb.snapshot_counts["shadow"] > before["shadow"], cb.snapshot_counts
    manifest = assert_files_hold_their_epochs(tmp_path, states)
    assert {a["epoch"] for a in manifest["artifacts"]} >= {1, 5}


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [("snapshot_to", "gpu", "'auto', 'device', 'host'"),
     ("waiting_host_bytes", -1, "integer >= 0"),
     ("device_memory", 5, "callable")],
)
def test_bad_snapshot_options_are_named(tmp_path, option, value, allowed):
    with pytest.raises(ValueError, match=option) as error:
        CkptCallback(tmp_path, {"loss": "min"}, **{option: value})
    assert allowed in str(error.value) and repr(value) in str(error.value)


def test_a_save_with_no_room_to_wait_is_skipped_counted_and_rolled_back(
    tmp_path, tiny_model, tiny_data
):
    """With no host memory allowed for a waiting snapshot, saves due while a write runs
    are skipped: counted, their improvement forgotten (the next epoch that beats the
    committed best saves), and the files hold their epochs' states."""
    release = threading.Event()

    class HeldWrite(CkptCallback):
        def write(self, job):
            if job.epoch == 1:
                release.wait()  # epochs 2.. end while this write runs
            yield from super().write(job)

    class Release(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 4:  # 1-based epoch 5: skipped saves counted by now
                release.set()

    states = KeepStates()
    cb = HeldWrite(tmp_path, {"loss": "min"}, waiting_host_bytes=0, keep_top_k=None)
    x, y = tiny_data
    model = tiny_model()
    history = model.fit(x, y, epochs=6, batch_size=16, verbose=0, shuffle=False,
                        callbacks=[states, cb, Release()])
    assert cb.skipped[:4] == [2, 3, 4, 5], cb.skipped
    assert cb.snapshot_counts["skipped"] == len(cb.skipped)
    manifest = read_manifest(tmp_path / "ckpt")
    epochs = [a["epoch"] for a in manifest["artifacts"]]
    assert not set(epochs) & set(cb.skipped)
    best = manifest["basis"]["best"]["loss"]
    assert best["epoch"] == max(epochs)
    assert best["value"] == pytest.approx(history.history["loss"][best["epoch"] - 1])


MEMORY_RUN = r"""
import json, sys, threading
import numpy as np, psutil
from cvml_core.keras_compat import keras
from cvml_ckpt import CkptCallback

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(2048),
                          keras.layers.Dense(2048), keras.layers.Dense(10)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(0).random((8, 1024), dtype="float32")
y = np.arange(8) % 10
model.train_on_batch(x, y)
state = sum(np.array(v).nbytes for v in model.weights + model.optimizer.variables)
folder = sys.argv[1]
proc = psutil.Process()
peak = [0]
stop = threading.Event()

def sample():
    while not stop.wait(0.001):
        peak[0] = max(peak[0], proc.memory_info().rss)

threading.Thread(target=sample, daemon=True).start()

def growth(run):
    base = peak[0] = proc.memory_info().rss
    run()
    return (peak[0] - base) / state

def keras_saves():  # the writer's own cost: Keras' save_weights of the live model
    for _ in range(3):
        model.train_on_batch(x, y)
        model.save_weights(folder + "/reference.weights.h5")

keras_saves()  # h5py's first use
reference = growth(keras_saves)
cb = CkptCallback(folder, {"loss": "min"}, save_weights_only=True,
                  waiting_host_bytes=int(sys.argv[2]) if sys.argv[2] != "None" else None)
cb.set_model(model)

def first_save():  # the shadow built (by the worker on TF and torch), the first file written
    cb.on_train_begin({})
    cb.wait_for_background()
    model.train_on_batch(x, y)
    cb.on_epoch_end(0, {"loss": 1.0})
    cb.wait_for_background()

first = growth(first_save)
model.train_on_batch(x, y)
cb.on_epoch_end(1, {"loss": 0.9})  # the shadow is built: the writer's one host copy
cb.wait_for_background()

def back_to_back():  # writes overlap the next saves
    for epoch in range(2, 10):
        model.train_on_batch(x, y)
        cb.on_epoch_end(epoch, {"loss": 1.0 / epoch})
    cb.wait_for_background()

peak_growth = growth(back_to_back)
cb.on_train_end({})
stop.set()
print(json.dumps({"first": first, "peak": peak_growth, "reference": reference, "state": state,
                  "counts": cb.snapshot_counts, "skipped": cb.skipped}))
"""


def test_back_to_back_saves_grow_host_memory_less_than_one_more_copy(tmp_path):
    """The first save (with the shadow's build) grows the process by the shadow and
    Keras' own write. With the shadow built (the one host copy the writer keeps), eight
    saves back to back (75 MB of weights and Adam state) grow the process by less than
    1.1 copies of the state at peak (issue 21's bound): a snapshot that cannot wait within
    the budget is skipped, not queued (queued, each would add a whole copy: about 2.9
    copies here). The growth is compared with a bound, not with Keras' own
    ``save_weights`` (0.45 copies here): with the oldest pins (TensorFlow 2.16, h5py 3.10)
    a training step that overlaps the write measured 0.90 copies against 0.56 with
    TensorFlow 2.21."""
    # Large blocks mmapped, so that freed memory leaves the RSS at once: the figure is
    # what the process holds, not what the allocator keeps for later.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_RUN, str(tmp_path), "None"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # The worker returns freed heap after each job (glibc's malloc_trim), so the base
    # no longer holds the last write's freed buffers for the next write to reuse: each
    # write's own transient (Keras' save_weights, the reference) counts again.
    assert result["peak"] <= 1.1 + result["reference"], result
    # The first save: its host copy (one copy of the state) and the shadow built from
    # it (another), with Keras' own save_weights (the reference) and a fifth of a copy to
    # spare. From a zipped .keras source, Keras would also hold the whole weights file
    # in memory when writing it and reading it back.
    assert result["first"] <= 2.2 + result["reference"], result
    assert result["counts"]["shadow"] >= 1 and result["skipped"], result
