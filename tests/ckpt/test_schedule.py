"""Which epochs save: chosen logs sequences fed to on_epoch_end (the ``drive`` fixture)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from cvml_ckpt import CkptCallback

from cvml_core import BackgroundJobError, LogDirError, MissingMetricError


@pytest.fixture
def model(tiny_model):
    return tiny_model()


def losses(*values, key="val_loss"):
    return [{key: v, "loss": 1.0} for v in values]


def test_skip_and_frequency_pick_the_due_epochs(tmp_path, drive, model, ck):
    cb = CkptCallback(tmp_path, {"val_loss": "min"}, skip_from_start=2, frequency=2, save_last=True)
    drive(cb, losses(8, 7, 6, 5, 6, 7, 3, 4, 5, 2), model=model)
    # due: 4, 6, 8, 10; improving among them: 4 (5), 8 (4 is not < 5? 8 -> 4 < 5), 10 (2)
    assert ck.saves(tmp_path) == {"val_loss": [4, 8, 10]}
    assert ck.saves(tmp_path, role="last") == {None: [4, 6, 8, 10]}
    assert ck.files(tmp_path) == ["best_val_loss.keras", "last.keras"]
    assert ck.epoch(tmp_path / "ckpt" / "best_val_loss.keras") == 10


def test_min_and_max_keys_each_keep_their_own_best(tmp_path, drive, model, ck):
    logs = [
        {"val_loss": 0.9, "val_accuracy": 0.50},
        {"val_loss": 0.8, "val_accuracy": 0.40},
        {"val_loss": 0.85, "val_accuracy": 0.60},
        {"val_loss": 0.7, "val_accuracy": 0.60},
        {"val_loss": 0.75, "val_accuracy": 0.65},
    ]
    cb = CkptCallback(tmp_path, {"val_loss": "min", "val_accuracy": "max"})
    drive(cb, logs, model=model)
    assert ck.saves(tmp_path) == {"val_loss": [1, 2, 4], "val_accuracy": [1, 3, 5]}
    folder = tmp_path / "ckpt"
    assert ck.epoch(folder / "best_val_loss.keras") == 4
    assert ck.epoch(folder / "best_val_accuracy.keras") == 5
    state = ck.manifest(tmp_path)["basis"]["best"]
    assert state == {
        "val_loss": {"value": 0.7, "epoch": 4},
        "val_accuracy": {"value": 0.65, "epoch": 5},
    }


def test_one_epoch_improving_two_keys_writes_once_and_links(tmp_path, drive, model, ck):
    cb = CkptCallback(tmp_path, {"val_loss": "min", "loss": "min"}, save_last=True)
    drive(cb, [{"val_loss": 1.0, "loss": 1.0}], model=model)
    folder = tmp_path / "ckpt"
    inodes = {os.stat(folder / n).st_ino for n in ck.files(tmp_path)}
    assert len(ck.files(tmp_path)) == 3 and len(inodes) == 1


def test_nan_and_inf_never_improve_and_min_delta_is_honoured(tmp_path, drive, model, ck):
    cb = CkptCallback(tmp_path, {"val_loss": "min"}, min_delta=0.05)
    drive(cb, losses(math.nan, 1.0, math.inf, 0.97, -math.inf, 0.9, math.nan, 0.84), model=model)
    assert ck.saves(tmp_path) == {"val_loss": [2, 6, 8]}


def test_nothing_due_writes_nothing_but_the_folder(tmp_path, drive, model, ck):
    cb = CkptCallback(tmp_path, {"val_loss": "min"}, skip_from_start=5)
    drive(cb, losses(3, 2, 1), model=model)
    assert ck.files(tmp_path) == []


def test_resume_in_the_middle_keeps_the_best_of_the_first_run(tmp_path, drive, model, ck):
    first = CkptCallback(tmp_path, {"val_loss": "min"}, skip_from_start=1)
    drive(first, losses(9, 5, 4, 6), model=model)  # epochs 1-4: saves 2, 3
    best = tmp_path / "ckpt" / "best_val_loss.keras"
    before = best.read_bytes()
    second = CkptCallback(tmp_path, {"val_loss": "min"}, skip_from_start=1)
    assert second.policy.best["val_loss"].value == 4
    drive(second, losses(4.5, 5, 4.2), model=model, start_epoch=4)  # epochs 5-7: all worse
    assert best.read_bytes() == before
    drive(second, losses(3.5), model=model, start_epoch=7)  # epoch 8 improves
    assert ck.saves(tmp_path) == {"val_loss": [2, 3, 8]}
    assert ck.epoch(best) == 8


def test_keep_top_k_keeps_the_k_latest_bests_and_nothing_else_is_touched(
    tmp_path, drive, model, ck
):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "notes.keras").write_text("user file")
    stranger = folder / "best_val_loss.epoch0099.keras"
    stranger.write_text("not in the manifest")
    outside = tmp_path / "best_val_loss.epoch0002.keras"
    outside.write_text("outside the folder")
    cb = CkptCallback(tmp_path, {"val_loss": "min"}, keep_top_k=3)
    drive(cb, losses(9, 8, 8.5, 7, 6, 5), model=model)
    assert ck.files(tmp_path) == [
        "best_val_loss.epoch0004.keras",
        "best_val_loss.epoch0005.keras",
        "best_val_loss.epoch0099.keras",
        "best_val_loss.keras",
        "notes.keras",
    ]
    assert (folder / "notes.keras").read_text() == "user file"
    assert stranger.read_text() == "not in the manifest"
    assert outside.read_text() == "outside the folder"
    assert ck.epoch(folder / "best_val_loss.keras") == 6
    assert ck.epoch(folder / "best_val_loss.epoch0005.keras") == 5
    assert ck.epoch(folder / "best_val_loss.epoch0004.keras") == 4


def test_keep_top_k_none_keeps_every_best(tmp_path, drive, model, ck):
    cb = CkptCallback(tmp_path, {"val_loss": "min"}, keep_top_k=None)
    drive(cb, losses(3, 2, 1), model=model)
    assert ck.files(tmp_path) == [
        "best_val_loss.epoch0001.keras", "best_val_loss.epoch0002.keras", "best_val_loss.keras",
    ]


def test_a_missing_basis_key_fails_naming_the_keys_present(tmp_path, drive, model, ck):
    cb = CkptCallback(tmp_path, {"val_acc": "max"})
    with pytest.raises(MissingMetricError) as info:
        drive(cb, [{"val_accuracy": 0.5, "loss": 1.0}], model=model)
    assert "val_acc" in str(info.value) and "'val_accuracy'" in str(info.value)
    assert ck.files(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"keep_top_k": 0}, "keep_top_k"),
        ({"keep_top_k": 2.0}, "keep_top_k"),
        ({"save_last": "yes"}, "save_last"),
        ({"save_weights_only": 1}, "save_weights_only"),
        ({"frequency": 0}, "frequency"),
        ({"skip_from_start": -1}, "skip_from_start"),
        ({"basis_dict": {"val_loss": "lowest"}}, "val_loss"),
        ({"basis_dict": {}}, "basis_dict"),
    ],
)
def test_bad_arguments_fail_at_construction(tmp_path, kwargs, name):
    args = {"log_dir": tmp_path, "basis_dict": {"val_loss": "min"}, **kwargs}
    with pytest.raises(ValueError, match="Received") as info:
        CkptCallback(**args)
    assert name in str(info.value)


def test_keys_that_map_to_one_file_name_are_refused(tmp_path):
    with pytest.raises(ValueError, match="same file name"):
        CkptCallback(tmp_path, {"out/acc": "max", "out_acc": "max"})


def test_a_log_dir_that_cannot_be_created_fails_at_construction(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(LogDirError) as info:
        CkptCallback(blocker / "run", {"val_loss": "min"})
    assert str(blocker / "run") in str(info.value)
    assert isinstance(info.value, OSError)


def test_every_written_file_is_announced(tmp_path, drive, model, announced, ck):
    cb = CkptCallback(tmp_path, {"val_loss": "min"}, save_last=True, keep_top_k=2)
    drive(cb, losses(3, 4, 2), model=model)
    got = sorted((Path(a.path).name, a.epoch, a.details["role"]) for a in announced)
    assert got == [
        ("best_val_loss.epoch0001.keras", 1, "previous_best"),
        ("best_val_loss.keras", 1, "best"),
        ("best_val_loss.keras", 3, "best"),
        ("last.keras", 1, "last"),
        ("last.keras", 2, "last"),
        ("last.keras", 3, "last"),
    ]
    assert all(a.kind == "checkpoint" and a.callback == "ckpt" for a in announced)
    manifest = ck.manifest(tmp_path)["artifacts"]
    assert len(manifest) == len(announced)
    latest = {Path(e["path"]).name: e for e in manifest}  # the last entry per path
    for name, entry in latest.items():
        assert entry["details"]["size_bytes"] == (tmp_path / "ckpt" / name).stat().st_size


def test_a_failure_partway_through_an_epoch_leaves_the_manifest_matching_the_files(
    tmp_path, drive, model, ck
):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    # Epoch 2 improves both keys; keeping loss's epoch-1 best fails (a folder blocks the
    # name) after val_loss's best file is already replaced by epoch 2.
    (folder / "best_loss.epoch0001.keras").mkdir()
    cb = CkptCallback(tmp_path, {"val_loss": "min", "loss": "min"}, keep_top_k=2)
    with pytest.raises(BackgroundJobError, match="checkpoint of epoch 2"):
        drive(cb, [{"val_loss": 2.0, "loss": 2.0}, {"val_loss": 1.0, "loss": 1.0}], model=model)
    assert ck.epoch(folder / "best_val_loss.keras") == 2
    assert ck.epoch(folder / "best_loss.keras") == 1
    best = ck.manifest(tmp_path)["basis"]["best"]
    assert best == {"val_loss": {"value": 1.0, "epoch": 2}, "loss": {"value": 2.0, "epoch": 1}}
    assert ck.saves(tmp_path) == {"val_loss": [1, 2], "loss": [1]}
    # A resumed run replaces each file only with an epoch better than what it holds.
    (folder / "best_loss.epoch0001.keras").rmdir()
    resumed = CkptCallback(tmp_path, {"val_loss": "min", "loss": "min"}, keep_top_k=2)
    drive(resumed, [{"val_loss": 1.5, "loss": 1.5}], model=model, start_epoch=2)
    assert ck.epoch(folder / "best_val_loss.keras") == 2
    assert ck.epoch(folder / "best_loss.keras") == 3
