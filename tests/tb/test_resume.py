"""A resumed run in a new callback object (as in a new process) writes no step twice."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from cvml_tb import TensorboardCallback, TensorboardStepWarning
from cvml_tb.steps import WrittenSteps, last_written_steps

from cvml_core.artifacts.manifest import read_manifest


def _fit(model, data, cb, epochs, initial_epoch=0, extra=()):
    x, y = data
    return model.fit(
        x, y, validation_data=(x[:16], y[:16]), epochs=epochs, initial_epoch=initial_epoch,
        batch_size=16, callbacks=[cb, *extra], verbose=0,
    ).history


def _steps(events):
    return [step for step, _ in events]


def test_resume_before_the_last_written_epoch_continues_after_it(
    tmp_path, tiny_model, tiny_data, read_run
):
    # The first run logs through epoch 8 (4 batches per epoch: iterations 1..32); its
    # checkpoint of epoch 5 is what a crashed run would be resumed from.
    checkpoint = tmp_path / "epoch5.keras"
    save_epoch5 = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epoch == 4 and model.save(checkpoint)
    )
    model = tiny_model()
    first = TensorboardCallback(tmp_path, {"val_loss": "min"}, update_freq=1)
    _fit(model, tiny_data, first, epochs=8, extra=[save_epoch5])
    run_dirs = [tmp_path / "tb" / "train", tmp_path / "tb" / "validation"]
    assert last_written_steps(run_dirs).epoch == 7  # 0-based, as Keras' steps
    assert last_written_steps(run_dirs).iteration == 32

    # A new callback object (a new process) resumes from the epoch-5 checkpoint.
    restored = keras.models.load_model(checkpoint)
    assert int(restored.optimizer.iterations.numpy()) == 20
    resumed = TensorboardCallback(tmp_path, {"val_loss": "min"}, update_freq=1)
    with pytest.warns(TensorboardStepWarning) as caught:
        history = _fit(restored, tiny_data, resumed, epochs=8, initial_epoch=5)
    messages = [str(w.message) for w in caught]
    assert any(
        "epoch steps up to 7" in m and "starts at epoch 6 (step 5)" in m and "steps 8, 9" in m
        for m in messages
    ), messages
    assert any("iteration steps" in m and "up to 32" in m and "restarts at 20" in m
               for m in messages), messages

    train, val = read_run(run_dirs[0]), read_run(run_dirs[1])
    # every step once: the crashed tail (steps 5..7) is kept, the resumed epochs follow at 8..10
    assert _steps(train["epoch_loss"]) == list(range(11))
    assert _steps(val["epoch_loss"]) == list(range(11))
    np.testing.assert_allclose([v for _, v in train["epoch_loss"][8:]], history["loss"], rtol=1e-6)
    np.testing.assert_allclose(
        [v for _, v in val["epoch_loss"][8:]], history["val_loss"], rtol=1e-6
    )
    assert _steps(val["epoch_loss/best"]) == list(range(11))
    # iteration scalars: the restored optimizer counts 21..32 again; they go to 33..44
    assert _steps(train["batch_loss"]) == list(range(1, 45))
    assert _steps(val["evaluation_loss_vs_iterations"]) == list(range(4, 45, 4))
    assert last_written_steps(run_dirs) == WrittenSteps(epoch=10, iteration=44)


def test_shifted_image_artifacts_keep_the_keras_epoch(tmp_path, cnn, images_data, read_run):

    x, y = images_data
    model = cnn()

    def make():
        return TensorboardCallback(
            tmp_path, {"val_loss": "min"}, image_shape=(8, 8, 1), sample_data=(x, y),
            max_images=4,
        )

    _fit(model, images_data, make(), epochs=3)
    with pytest.warns(TensorboardStepWarning, match="up to 2, and this fit starts at epoch 2"):
        _fit(model, images_data, make(), epochs=3, initial_epoch=1)  # steps 1, 2 -> 3, 4
    grid_steps = _steps(read_run(tmp_path / "tb" / "validation")["best/samples"])
    assert grid_steps == sorted(set(grid_steps)) and grid_steps[0] == 0 and 3 in grid_steps
    entries = read_manifest(tmp_path / "tb")["artifacts"]
    resumed_first = [e for e in entries if e["details"]["step"] == 3]
    assert len(resumed_first) == 1
    assert resumed_first[0]["epoch"] == 2 and resumed_first[0]["basis_key"] is None


def test_resume_after_the_last_written_epoch_keeps_epoch_numbers(
    tmp_path, tiny_model, tiny_data, read_run
):
    import warnings

    model = tiny_model()
    _fit(model, tiny_data, TensorboardCallback(tmp_path, {"val_loss": "min"}), epochs=3)
    resumed = TensorboardCallback(tmp_path, {"val_loss": "min"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", TensorboardStepWarning)
        _fit(model, tiny_data, resumed, epochs=5, initial_epoch=3)
        # another fit of the same object from epoch 1 continues silently (several fits)
        _fit(model, tiny_data, resumed, epochs=1)
    train = read_run(tmp_path / "tb" / "train")
    assert _steps(train["epoch_loss"]) == [0, 1, 2, 3, 4, 5]


def test_a_new_object_starting_over_in_a_used_folder_warns(
    tmp_path, tiny_model, tiny_data, read_run
):
    model = tiny_model()
    _fit(model, tiny_data, TensorboardCallback(tmp_path, {"val_loss": "min"}), epochs=2)
    again = TensorboardCallback(tmp_path, {"val_loss": "min"})
    with pytest.warns(TensorboardStepWarning, match="up to 1, and this fit starts at epoch 1"):
        _fit(model, tiny_data, again, epochs=2)
    assert _steps(read_run(tmp_path / "tb" / "validation")["epoch_loss"]) == [0, 1, 2, 3]


def test_last_written_steps_of_missing_or_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an event file")
    steps = last_written_steps([tmp_path / "missing", tmp_path / "empty"])
    assert (steps.epoch, steps.iteration) == (-1, 0)
