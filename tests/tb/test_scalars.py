"""Epoch scalars, best-so-far values, batch scalars, histograms and texts, read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cvml_tb import TensorboardCallback


def _fit(model, data, cb, epochs, initial_epoch=0, **kwargs):
    x, y = data
    return model.fit(
        x, y, validation_data=(x[:16], y[:16]), epochs=epochs, initial_epoch=initial_epoch,
        batch_size=16, callbacks=[cb, *kwargs.pop("extra", [])], verbose=0, **kwargs,
    )


def test_epoch_scalars_split_into_runs_with_best_so_far(tmp_path, tiny_model, tiny_data, read_run):
    model = tiny_model()
    cb = TensorboardCallback(tmp_path, {"val_loss": "min", "accuracy": "max"})
    history = _fit(model, tiny_data, cb, epochs=4).history
    train, val = read_run(tmp_path / "tb" / "train"), read_run(tmp_path / "tb" / "validation")

    # loss and val_loss share the chart "epoch_loss", one per run, at Keras' 0-based steps
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2, 3]
    assert [s for s, _ in val["epoch_loss"]] == [0, 1, 2, 3]
    np.testing.assert_allclose([v for _, v in train["epoch_loss"]], history["loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in val["epoch_loss"]], history["val_loss"], rtol=1e-6)
    np.testing.assert_allclose(
        [v for _, v in val["epoch_accuracy"]], history["val_accuracy"], rtol=1e-6
    )
    assert [v for _, v in train["epoch_learning_rate"]] == pytest.approx([0.001] * 4)
    assert not any(tag.startswith("samples/") for tag in val)

    # epoch_<metric>/best is the running best, in the run of the key, beside its metric
    running_min = np.minimum.accumulate(history["val_loss"])
    np.testing.assert_allclose([v for _, v in val["epoch_loss/best"]], running_min, rtol=1e-6)
    running_max = np.maximum.accumulate(history["accuracy"])
    np.testing.assert_allclose(
        [v for _, v in train["epoch_accuracy/best"]], running_max, rtol=1e-6
    )
    assert "epoch_loss/best" not in train and "epoch_accuracy/best" not in val
    # the epoch of a best is text (TensorBoard smooths every scalar), on improved epochs
    assert not any("best_epoch" in tag for tag in [*train, *val])
    best_epochs = [int(np.argmin(history["val_loss"][: i + 1])) + 1 for i in range(4)]
    texts = dict(train["basis/best"])
    assert 0 in texts and f"| val_loss | min | {running_min[0]:.6g} | 1 | **new** |" in texts[0]
    last = texts[max(texts)]
    assert f"| val_loss | min | {running_min[-1]:.6g} | {best_epochs[-1]} |" in last

    # the bests are kept in the manifest for a resumed run
    manifest = json.loads((tmp_path / "tb" / "manifest.json").read_text())
    assert manifest["basis"]["best"]["val_loss"]["epoch"] == best_epochs[-1]
    assert manifest["basis"]["best"]["val_loss"]["value"] == pytest.approx(running_min[-1])


def test_same_tags_steps_and_values_as_keras_tensorboard(
    tmp_path, tiny_model, tiny_data, read_run
):
    """Every summary Keras' own callback writes is written with its tag, run and step."""
    import keras

    model = tiny_model()
    # update_freq=1: with N > 1 Keras' callback also drops the epoch scalars of epochs
    # whose batch count is not a multiple of N (its record_if); this one does not
    ours = TensorboardCallback(tmp_path / "cvml", {"val_loss": "min"}, update_freq=1,
                               histogram_freq=2)
    theirs = keras.callbacks.TensorBoard(tmp_path / "keras", update_freq=1, histogram_freq=2)
    _fit(model, tiny_data, ours, epochs=3, extra=[theirs])  # 4 batches per epoch
    for run in ("train", "validation"):
        keras_run = read_run(tmp_path / "keras" / run)
        cvml_run = read_run(tmp_path / "cvml" / "tb" / run)
        assert set(keras_run) <= set(cvml_run), (run, set(keras_run) - set(cvml_run))
        for tag, events in keras_run.items():
            assert [s for s, _ in cvml_run[tag]] == [s for s, _ in events], (run, tag)
            if isinstance(events[0][1], float):
                np.testing.assert_allclose(
                    [v for _, v in cvml_run[tag]], [v for _, v in events], rtol=1e-6,
                    err_msg=f"{run}/{tag}",
                )
    val = read_run(tmp_path / "cvml" / "tb" / "validation")
    assert [s for s, _ in val["evaluation_loss_vs_iterations"]] == [4, 8, 12]
    train = read_run(tmp_path / "cvml" / "tb" / "train")
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2]
    graph = json.loads(train["keras"][0][1])  # the Graphs tab's conceptual graph
    assert train["keras"][0][0] == 0 and graph["class_name"] == "Sequential"


def test_steps_continue_over_fits_and_a_resumed_run(tmp_path, tiny_model, tiny_data, read_run):
    model = tiny_model()
    cb = TensorboardCallback(tmp_path, {"val_loss": "min"})
    _fit(model, tiny_data, cb, epochs=2)
    _fit(model, tiny_data, cb, epochs=2)  # numbered 0..1 again by Keras: continues at 2
    _fit(model, tiny_data, cb, epochs=6, initial_epoch=4)  # continues at 4
    # a new process resuming from epoch 6, as TrainInfer's start_epoch does
    resumed = TensorboardCallback(tmp_path, {"val_loss": "min"})
    best_before = resumed.policy.best["val_loss"]
    assert best_before.epoch is not None
    history = _fit(model, tiny_data, resumed, epochs=7, initial_epoch=6).history

    train, val = read_run(tmp_path / "tb" / "train"), read_run(tmp_path / "tb" / "validation")
    assert len(list((tmp_path / "tb" / "train").iterdir())) == 4  # one event file per fit
    # sorted: TensorBoard reads event files in name order, and names written in the same
    # second differ by a counter compared as text ("10" < "2"), not by write order
    assert sorted(s for s, _ in train["epoch_loss"]) == [0, 1, 2, 3, 4, 5, 6]
    assert sorted(s for s, _ in val["epoch_loss"]) == [0, 1, 2, 3, 4, 5, 6]
    last_best = max(val["epoch_loss/best"])[1]
    assert last_best == pytest.approx(min(best_before.value, history["val_loss"][0]))
    assert [s for s, _ in train["run/model"]] == [0, 0]  # once per callback object
    steps = sorted(s for s, _ in val["evaluation_loss_vs_iterations"])
    assert steps == sorted(set(steps)) and len(steps) == 7


def test_batch_scalars_histograms_and_texts(tmp_path, tiny_model, tiny_data, read_run):
    model = tiny_model()
    cb = TensorboardCallback(tmp_path, {"val_loss": "min"}, update_freq=2, histogram_freq=2)
    _fit(model, tiny_data, cb, epochs=3)  # 4 batches per epoch
    _fit(model, tiny_data, cb, epochs=5, initial_epoch=3)
    train = read_run(tmp_path / "tb" / "train")

    batch_steps = [s for s, _ in train["batch_loss"]]
    assert batch_steps == list(range(2, 21, 2))  # the optimizer's iterations, every 2nd
    assert all(np.isfinite(v) for _, v in train["batch_loss"])
    histograms = [tag for tag in train if tag.endswith("/histogram")]
    # one histogram per weight on epochs 0, 2, 4, as Keras; tags repeat where Keras' do
    # (before Keras 3.14 it tags by variable name: two layers' "kernel/histogram")
    assert sum(len(train[tag]) for tag in histograms) == len(model.weights) * 3 == 12
    assert all(sorted({s for s, _ in train[tag]}) == [0, 2, 4] for tag in histograms)
    model_text = train["run/model"][0][1]
    assert "dense" in model_text.lower() and "Total params" in model_text
    arguments = train["run/arguments"][0][1]
    assert "| basis_dict | `{'val_loss': 'min'}` |" in arguments
    assert "| update_freq | `2` |" in arguments
    assert "| fit.epochs | `3` |" in arguments


def _has_batch_hook(callback):
    """Whether ``on_train_batch_end`` is anything but ``keras.callbacks.Callback``'s own."""
    import keras

    default = keras.callbacks.Callback.on_train_batch_end
    return "on_train_batch_end" in vars(callback) or (
        type(callback).on_train_batch_end is not default
    )


def test_epoch_only_callback_keeps_keras_batch_dispatch_fast(tmp_path):
    assert not _has_batch_hook(TensorboardCallback(tmp_path, {"loss": "min"}))
    busy = TensorboardCallback(tmp_path, {"loss": "min"}, update_freq="batch")
    assert _has_batch_hook(busy)


def test_learning_rate_from_a_scheduler(tmp_path, tiny_model, tiny_data, read_run):
    import keras

    model = tiny_model()
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 * 0.5**epoch)
    cb = TensorboardCallback(tmp_path, {"val_loss": "min"})
    _fit(model, tiny_data, cb, epochs=3, extra=[scheduler])
    rates = [v for _, v in read_run(tmp_path / "tb" / "train")["epoch_learning_rate"]]
    assert rates == pytest.approx([0.01, 0.005, 0.0025])


def test_folder_names_the_callbacks_folder(tmp_path, tiny_model, tiny_data, read_run):
    cb = TensorboardCallback(tmp_path, {"val_loss": "min"}, folder="tb-second")
    assert cb.folder == tmp_path / "tb-second"
    _fit(tiny_model(), tiny_data, cb, epochs=1)
    assert "epoch_loss" in read_run(tmp_path / "tb-second" / "validation")
    assert not (tmp_path / "tb").exists()
    assert (tmp_path / "tb-second" / "manifest.json").exists()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"update_freq": 0}, "update_freq"),
        ({"update_freq": "step"}, "update_freq"),
        ({"histogram_freq": -1}, "histogram_freq"),
        ({"max_images": -2}, "max_images"),
        ({"log_images": "yes"}, "log_images"),
        ({"image_shape": (8, 8, 2)}, "image_shape"),
        ({"frequency": 0}, "frequency"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=rf"Received: {name}="):
        TensorboardCallback(tmp_path, {"val_loss": "min"}, **kwargs)
