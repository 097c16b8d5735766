"""Atomic writes and the manifest (no TensorFlow); the background worker: test_worker.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvml_core.artifacts.artifact import Artifact
from cvml_core.artifacts.atomic import (
    TEMP_PREFIX,
    atomic_path,
    atomic_write_text,
    remove_stale_temps,
    temp_files_in,
    temp_path_for,
)
from cvml_core.artifacts.manifest import Manifest, read_manifest


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "best.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["best.txt"]


def test_a_failing_writer_keeps_the_previous_file(tmp_path):
    target = tmp_path / "best.keras"
    atomic_write_text(target, "previous best")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("disk full")
    assert target.read_text() == "previous best"
    assert [p.name for p in tmp_path.iterdir()] == ["best.keras"]


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        with atomic_path(tmp_path / "x.bin"):
            pass
    assert not (tmp_path / "x.bin").exists()


def test_temp_names_keep_the_full_suffix_and_are_cleaned_up(tmp_path):
    tmp = temp_path_for(tmp_path / "best_val_loss.weights.h5")
    assert tmp.name.startswith(TEMP_PREFIX) and tmp.name.endswith("best_val_loss.weights.h5")
    tmp.write_text("left by a killed process")
    (tmp_path / "keep.txt").write_text("x")
    assert remove_stale_temps(tmp_path) == [tmp]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_temp_files_go_to_a_scratch_folder_while_a_callback_works(tmp_path):
    import tempfile
    import threading

    before = tempfile.gettempdir()
    a, b = tmp_path / "ckpt", tmp_path / "tflite"
    entered, leave = threading.Event(), threading.Event()

    def other_callback():  # overlapping blocks share the first one's folder
        with temp_files_in(b):
            entered.set()
            leave.wait(30)

    with temp_files_in(a):
        (scratch,) = a.iterdir()
        assert scratch.name.startswith(f"{TEMP_PREFIX}tempdir-")
        assert tempfile.gettempdir() == str(scratch)
        left = tempfile.mkdtemp()  # as Keras' save makes its working folder
        assert Path(left).parent == scratch
        thread = threading.Thread(target=other_callback)
        thread.start()
        assert entered.wait(30)
        assert tempfile.gettempdir() == str(scratch) and not b.exists()
    assert tempfile.gettempdir() == str(scratch)  # the other block still runs
    leave.set()
    thread.join(30)
    assert tempfile.gettempdir() == before
    # not empty (as after a kill mid-save): kept for the next start to remove
    assert scratch.exists() and remove_stale_temps(a) == [scratch] and not scratch.exists()
    with temp_files_in(a):
        pass
    assert list(a.iterdir()) == []  # an empty one is removed at once


def test_manifest_round_trips_and_rejects_unknown_layouts(tmp_path):
    manifest = Manifest(tmp_path, "ckpt")
    path = str(tmp_path / "a.keras")
    manifest.add(Artifact("checkpoint", path, 2, {"val_loss": 0.5}, "val_loss"))
    manifest.basis_state = {"best": {"val_loss": {"value": 0.5, "epoch": 2}}}
    manifest.write()
    again = Manifest(tmp_path, "ckpt")
    assert again.artifacts == manifest.artifacts and again.basis_state == manifest.basis_state
    data = read_manifest(tmp_path)  # the whole record (manifest.json and its history)
    assert set(data) == {"version", "callback", "basis", "artifacts"}
    assert set(data["artifacts"][0]) == {
        "kind", "path", "epoch", "metrics", "basis_key", "callback", "details"
    }
    (tmp_path / "manifest.json").write_text('{"version": 99}')
    with pytest.raises(ValueError, match="version=99"):
        Manifest(tmp_path, "ckpt")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read manifest"):
        Manifest(tmp_path, "ckpt")
