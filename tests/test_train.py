"""TrainInfer: data handling, callbacks by name, sample data, resume, failures, hooks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import cvml_core
from cvml_core.plugin_host import loader as plugins
from cvml_core.plugin_host.loader import PluginSource, UnknownCallbackError
from cvml_core.plugin_host.notify import MissingNotifierError
from cvml_core.plugin_host.run_info import RunInfo
from cvml_core.train.train_infer import SAMPLE_SIZE, TrainInfer, dataset_batching

BASIS = {"val_loss": "min", "val_accuracy": "max"}


class RecordingCallback(cvml_core.BasisCallback):
    """Writes a note per improved key; wants sample data; restores weights it saved."""

    name = "recording"
    wants_sample_data = True

    def __init__(self, log_dir, basis_dict, slow_event=None, **kwargs):
        super().__init__(log_dir, basis_dict, **kwargs)
        self.improved = []
        self.slow_event = slow_event

    def on_due(self, epoch, improved_keys, logs):
        path = self.folder / f"epoch_{epoch}.weights.h5"
        with cvml_core.atomic_path(path) as tmp:
            self.model.save_weights(tmp)
        self.record([self.artifact("weights", path, epoch, logs)])

    def on_improved(self, epoch, improved_keys, logs):
        self.improved.append((epoch, list(improved_keys)))

    def snapshot(self, epoch, logs):
        return dict(logs)

    def write(self, job):
        if self.slow_event is not None:
            self.slow_event.wait(10)
            time.sleep(0.3)
        for key in job.keys:
            path = self.folder / f"best_{key}.txt"
            cvml_core.atomic_write_text(path, f"{job.epoch} {job.snapshot[key]}")
            yield self.artifact("note", path, job.epoch, job.logs, key)

    def restore_latest(self, model, max_epoch=None):
        epochs = sorted(
            int(p.name.split("_")[1].split(".")[0]) for p in self.folder.glob("epoch_*.weights.h5")
        )
        epochs = [e for e in epochs if max_epoch is None or e <= max_epoch]
        if not epochs:
            return 0
        model.load_weights(self.folder / f"epoch_{epochs[-1]}.weights.h5")
        return epochs[-1]


class Registers:
    """A plugin registering the test callback by name."""

    @cvml_core.hookimpl
    def cvml_register_callbacks(self, register):
        register("recording", RecordingCallback, summary="test callback")


@pytest.fixture
def probe(run_hooks):
    """The run hooks' recorder, with the ``recording`` callback registered."""
    plugins.get_registry().add(PluginSource(
        name="recording", distribution="cvml-recording", version="0", module=Registers()
    ))
    return run_hooks


def make_sets(n_train=64, n_dev=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n_train + n_dev, 8)).astype("float32")
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype("int32")
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


class BatchCounter(cvml_core.keras_compat.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0
        self.begin_weights = None

    def on_train_begin(self, logs=None):
        self.begin_weights = [w.copy() for w in self.model.get_weights()]

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


class RaiseAt(cvml_core.keras_compat.Callback):
    def __init__(self, epoch, error, before=None):
        super().__init__()
        self.epoch, self.error, self.before = epoch, error, before

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            if self.before is not None:
                self.before()
            raise self.error


# -- data ------------------------------------------------------------------------------


def test_arrays_train_with_dev_logs_and_summary(tiny_model, capsys):
    train, dev = make_sets()
    history = TrainInfer(tiny_model(), basis_dict=BASIS).train(
        train, dev, batch_size=16, epochs=2, show_results=2
    )
    assert history.epoch == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    out = capsys.readouterr().out
    assert "basis key" in out and "val_loss" in out and "val_accuracy" in out


def test_unbatched_dataset_is_batched_with_batch_size(tiny_model):
    (x, y), dev = make_sets()
    counter = BatchCounter()
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    TrainInfer(tiny_model()).train(ds, dev, 16, 1, callbacks=[counter], show_results=0)
    assert counter.batches == len(x) // 16


def test_batched_dataset_keeps_its_batches_and_conflicts_are_errors(tiny_model):
    (x, y), (xd, yd) = make_sets()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    dev = tf.data.Dataset.from_tensor_slices((xd, yd)).batch(8)
    model = tiny_model()
    counter = BatchCounter()
    TrainInfer(model).train(ds, dev, None, 1, callbacks=[counter], show_results=0)
    assert counter.batches == len(x) // 8
    TrainInfer(model).train(ds, dev, 8, 1, show_results=0)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"already batched with batch size 8.*batch_size=32"):
        TrainInfer(model).train(ds, dev, 32, 1, show_results=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_dataset_batching_reads_the_element_spec_against_the_model(tiny_model):
    """Public API only: the element's rank against the model's input rank, and the
    size of the first batch; without a model input to compare with, batched (as
    model.fit assumes)."""
    model = tiny_model()
    x = np.zeros((10, 8), "float32")
    y = np.zeros(10, "int32")
    slices = tf.data.Dataset.from_tensor_slices((x, y))
    assert dataset_batching(slices, model) == (False, None)
    assert dataset_batching(slices.batch(4), model) == (True, 4)
    mapped = slices.batch(4).map(lambda a, b: (a * 2, b)).prefetch(1)
    assert dataset_batching(mapped, model) == (True, 4)
    assert dataset_batching(slices.batch(4).unbatch(), model) == (False, None)
    assert dataset_batching(slices.batch(5, drop_remainder=True).cache(), model) == (True, 5)
    assert dataset_batching(slices.batch(4)) == (True, 4)  # no model: batched

    def examples():
        yield from zip(x, y, strict=True)

    spec = (tf.TensorSpec((8,), tf.float32), tf.TensorSpec((), tf.int32))
    gen = tf.data.Dataset.from_generator(examples, output_signature=spec)
    assert dataset_batching(gen, tiny_model()) == (False, None)
    batch_spec = (tf.TensorSpec((None, 8), tf.float32), tf.TensorSpec((None,), tf.int32))
    batches = tf.data.Dataset.from_generator(lambda: iter([(x, y)]), output_signature=batch_spec)
    assert dataset_batching(batches, tiny_model()) == (True, None)


def test_bad_arguments_fail_before_training(tiny_model):
    train, dev = make_sets()
    ti = TrainInfer(tiny_model())
    with pytest.raises(ValueError, match="epochs=0"):
        ti.train(train, dev, 16, 0)
    with pytest.raises(ValueError, match="start_epoch=3 with epochs=3"):
        ti.train(train, dev, 16, 3, start_epoch=3)
    with pytest.raises(ValueError, match="show_results=3"):
        ti.train(train, dev, 16, 1, show_results=3)
    with pytest.raises(ValueError, match="batch_size=0"):
        ti.train(train, dev, 0, 1)
    with pytest.raises(ValueError, match="batch_size is needed"):
        ti.train(train, dev, None, 1)
    with pytest.raises(TypeError, match="train_dataset"):
        ti.train("data.csv", dev, 16, 1)
    with pytest.raises(ValueError, match="different lengths"):
        ti.train((train[0], train[1][:5]), dev, 16, 1)
    with pytest.raises(ValueError, match=r"need a dev set.*dev_dataset=None"):
        ti.train(train, None, 16, 1, basis_dict={"val_loss": "min"})
    uncompiled = cvml_core.keras_compat.keras.Sequential(
        [cvml_core.keras_compat.keras.Input((8,)), cvml_core.keras_compat.keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="compiled"):
        TrainInfer(uncompiled)


def test_a_teams_url_without_the_teams_plugin_names_the_package(tiny_model, monkeypatch):
    monkeypatch.setenv("CVML_DISABLE_PLUGIN_AUTOLOAD", "1")  # as if cvml-teams were absent
    train, dev = make_sets()
    ti = TrainInfer(tiny_model())
    url = "https://example.com/workflows/hook?sig=SECRET-PART"
    with pytest.raises(MissingNotifierError, match="pip install cvml-teams") as raised:
        ti.train(train, dev, 16, 1, teams_webhook_url=url)
    assert "teams_webhook_url=" in str(raised.value) and "SECRET" not in str(raised.value)
    assert ti.run is None  # refused before the run began
    for off in (None, "", "  "):  # no URL: no plugin needed
        ti.train(train, dev, 16, 1, show_results=0, teams_webhook_url=off)


def test_infer_and_evaluate_return_numpy_and_metrics(tiny_model):
    train, (xd, yd) = make_sets()
    ti = TrainInfer(tiny_model())
    ti.train(train, (xd, yd), 16, 1, show_results=0)
    expected = ti.model.predict(xd, verbose=0)
    unbatched = tf.data.Dataset.from_tensor_slices((xd, yd))
    only_x = tf.data.Dataset.from_tensor_slices(xd)
    for data in (xd, (xd, yd), unbatched, unbatched.batch(7), only_x):
        result = ti.infer(data)
        assert isinstance(result, np.ndarray) and result.shape == (len(xd), 2)
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    metrics = ti.evaluate(unbatched)
    assert set(metrics) >= {"loss", "accuracy"}
    assert metrics["loss"] == pytest.approx(ti.evaluate((xd, yd))["loss"], rel=1e-5)


# -- callbacks by name, sample data, hooks ---------------------------------------------


def test_callbacks_by_name_and_dict_share_log_dir_and_basis(tmp_path, tiny_model, probe):
    train, dev = make_sets()
    ti = TrainInfer(tiny_model(), log_dir=tmp_path, basis_dict=BASIS)
    ti.train(
        train, dev, 16, 2, show_results=0,
        callbacks=["recording", {"name": "recording", "folder": "second", "frequency": 2}],
    )
    first, second = ti.callbacks
    assert isinstance(first, RecordingCallback) and isinstance(second, RecordingCallback)
    assert first.folder == tmp_path / "recording" and second.folder == tmp_path / "second"
    assert first.policy.basis == BASIS and second.policy.frequency == 2
    assert [e for e, _ in first.improved][:1] == [1]
    assert [e for e, _ in second.improved] == [2]
    assert (tmp_path / "second" / "best_val_loss.txt").exists()


def test_unknown_name_fails_before_training_listing_installed(tmp_path, tiny_model, probe):
    train, dev = make_sets()
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    match = r"'recordin'.*Did you mean 'recording'.*recording"
    with pytest.raises(UnknownCallbackError, match=match):
        TrainInfer(model, log_dir=tmp_path, basis_dict=BASIS).train(
            train, dev, 16, 1, callbacks=["recording", "recordin"], show_results=0
        )
    assert not (tmp_path / "recording").exists()
    assert probe.begin == []
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    with pytest.raises(ValueError, match="needs log_dir"):
        TrainInfer(model, basis_dict=BASIS).train(train, dev, 16, 1, callbacks=["recording"])
    with pytest.raises(ValueError, match="'name' key"):
        TrainInfer(model).train(train, dev, 16, 1, callbacks=[{"image_shape": (8, 8, 1)}])


@pytest.mark.parametrize("kind", ["arrays", "unbatched", "batched"])
def test_callbacks_wanting_samples_get_the_first_dev_examples(tmp_path, tiny_model, kind):
    train, (xd, yd) = make_sets(n_dev=40)
    dev = {
        "arrays": (xd, yd),
        "unbatched": tf.data.Dataset.from_tensor_slices((xd, yd)),
        "batched": tf.data.Dataset.from_tensor_slices((xd, yd)).batch(16),
    }[kind]
    cb = RecordingCallback(tmp_path, BASIS)
    TrainInfer(tiny_model()).train(train, dev, 16, 1, callbacks=[cb], show_results=0)
    x, y = cb.sample_data
    np.testing.assert_array_equal(x, xd[:SAMPLE_SIZE])
    np.testing.assert_array_equal(y, yd[:SAMPLE_SIZE])


def test_sample_data_passed_by_the_user_wins(tmp_path, tiny_model):
    train, dev = make_sets()
    cb = RecordingCallback(tmp_path, BASIS)
    mine = np.ones((3, 8), "float32")
    cb.set_sample_data(mine, None)
    TrainInfer(tiny_model()).train(train, dev, 16, 1, callbacks=[cb], show_results=0)
    assert cb.sample_data[0] is mine


def test_run_hooks_get_a_run_info(tmp_path, tiny_model, probe):
    train, dev = make_sets()
    cb = RecordingCallback(tmp_path, {"val_loss": "min"})
    ti = TrainInfer(tiny_model(), log_dir=tmp_path, basis_dict={"val_accuracy": "max"})
    history = ti.train(train, dev, 16, 3, callbacks=[cb], show_results=0)
    (run,) = probe.begin
    (end_run, logs, error) = probe.end[0]
    assert isinstance(run, RunInfo) and end_run is run and error is None
    assert run.log_dir == str(tmp_path) and run.epochs == 3 and run.start_epoch == 0
    assert run.basis_dict == {"val_accuracy": "max", "val_loss": "min"}
    assert run.callbacks == ["recording"] and run.notify == {}
    assert run.end_time >= run.start_time and run.epochs_done == 3
    assert logs["val_loss"] == pytest.approx(history.history["val_loss"][-1])
    losses = history.history["val_loss"]
    assert run.best["val_loss"] == {
        "value": pytest.approx(min(losses)), "epoch": int(np.argmin(losses)) + 1
    }
    assert run.history["val_loss"] == pytest.approx(losses)
    kinds = {(a.kind, a.basis_key) for a in run.artifacts}
    assert ("weights", None) in kinds and ("note", "val_loss") in kinds
    assert all(a.callback == "recording" for a in run.artifacts)


# -- resume ----------------------------------------------------------------------------


def test_start_epoch_restores_weights_and_keeps_bests(tmp_path, tiny_model):
    train, dev = make_sets()
    first = RecordingCallback(tmp_path, {"val_loss": "min"})
    model = tiny_model(seed=0)
    first_losses = TrainInfer(model).train(
        train, dev, 16, 3, callbacks=[first], show_results=0
    ).history["val_loss"]
    weights_after_3 = model.get_weights()
    best_before = first.policy.best["val_loss"]

    resumed = RecordingCallback(tmp_path, {"val_loss": "min"})
    assert resumed.policy.best["val_loss"] == best_before
    counter = BatchCounter()
    other = tiny_model(seed=1)
    history = TrainInfer(other).train(
        train, dev, 16, 5, callbacks=[resumed, counter], start_epoch=3, show_results=0
    )
    assert history.epoch == [3, 4]
    for restored, saved in zip(counter.begin_weights, weights_after_3, strict=True):
        np.testing.assert_array_equal(restored, saved)
    best = resumed.policy.best["val_loss"]
    assert all(epoch > 3 for epoch, _ in resumed.improved)
    # the file on disk is the best over all 5 epochs: never replaced by a worse epoch
    note = (tmp_path / "recording" / "best_val_loss.txt").read_text()
    epoch_on_disk, value_on_disk = note.split()
    assert (int(epoch_on_disk), float(value_on_disk)) == (best.epoch, pytest.approx(best.value))
    all_losses = [*first_losses, *history.history["val_loss"]]
    assert best.value == pytest.approx(min(all_losses))


def test_start_epoch_without_a_restorer_warns(tmp_path, tiny_model):
    train, dev = make_sets()
    with pytest.warns(RuntimeWarning, match="no callback can restore weights"):
        TrainInfer(tiny_model()).train(train, dev, 16, 2, start_epoch=1, show_results=0)


# -- failures --------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("bad batch"), KeyboardInterrupt()])
def test_a_failing_run_waits_for_background_work_and_reports_the_error(
    tmp_path, tiny_model, probe, error
):
    train, dev = make_sets()
    event = threading.Event()
    cb = RecordingCallback(tmp_path, {"val_loss": "min"}, slow_event=event)
    with pytest.raises(type(error)) as raised:
        TrainInfer(tiny_model()).train(
            train, dev, 16, 4, callbacks=[cb, RaiseAt(2, error, before=event.set)],
            show_results=0,
        )
    assert raised.value is error
    # The note of epoch 1 (or 2) was still being written when training raised.
    assert (tmp_path / "recording" / "best_val_loss.txt").exists()
    assert any(a["kind"] == "note" for a in cb.manifest.artifacts)
    run, logs, reported = probe.end[0]
    assert reported is error
    # epoch 2 ended (its logs are recorded) before the callback raised in it
    assert run.epochs_done == 2 and "val_loss" in logs and run.end_time is not None


def test_a_background_failure_is_raised_and_reported(tmp_path, tiny_model, probe):
    train, dev = make_sets()

    class Broken(RecordingCallback):
        strict = True

        def write(self, job):
            raise OSError("disk full")

    with pytest.raises(cvml_core.BackgroundJobError, match="disk full"):
        TrainInfer(tiny_model()).train(
            train, dev, 16, 2, callbacks=[Broken(tmp_path, BASIS)], show_results=0
        )
    assert isinstance(probe.end[0][2], cvml_core.BackgroundJobError)
