"""The manifest's two files: ``manifest.json`` (what is live) and the append-only history
(no TensorFlow). Its round trip and unknown layouts: test_safety.py; with real callbacks:
test_callback.py, tests/ckpt, tests/faults."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cvml_core.artifacts.manifest as manifest_module
from cvml_core.artifacts.artifact import Artifact
from cvml_core.artifacts.atomic import FileWriteError
from cvml_core.artifacts.manifest import HISTORY_NAME, MANIFEST_NAME, Manifest, read_manifest


def _record(manifest: Manifest, folder: Path, epoch: int, name: str = "best_loss.keras") -> None:
    """What a callback's publish does: the pending write, then the commit write."""
    entry = Artifact("checkpoint", str(folder / name), epoch, {"loss": 1 / epoch}, "loss",
                     "ckpt", {"role": "best"})
    manifest.pending = [{"op": "rename", "temp": f".tmp-x-{name}", "artifact": entry.to_dict()}]
    manifest.write()
    manifest.add(entry)
    manifest.basis_state = {"best": {"loss": {"value": 1 / epoch, "epoch": epoch}}}
    manifest.pending = []
    manifest.write()


def _history_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / HISTORY_NAME).read_text().splitlines()]


def test_the_layout_current_state_and_history(tmp_path):
    manifest = Manifest(tmp_path, "ckpt")
    for epoch in (1, 2, 3):
        _record(manifest, tmp_path, epoch)
    _record(manifest, tmp_path, 3, "last.keras")
    state = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert set(state) == {"version", "callback", "basis", "current", "history"}
    assert state["version"] == 2 and state["callback"] == "ckpt"
    assert state["basis"]["best"]["loss"]["epoch"] == 3
    # per file name, its last entry
    assert [(Path(a["path"]).name, a["epoch"]) for a in state["current"]] == [
        ("best_loss.keras", 3), ("last.keras", 3)]
    assert state["history"] == {"file": HISTORY_NAME, "lines": 4,
                                "bytes": (tmp_path / HISTORY_NAME).stat().st_size}
    lines = _history_lines(tmp_path)
    assert [(line["op"], line["seq"], line["artifact"]["epoch"]) for line in lines] == [
        ("add", 0, 1), ("add", 1, 2), ("add", 2, 3), ("add", 3, 3)]
    # every reader sees the whole history, as the single file held it
    again = Manifest(tmp_path)
    assert again.callback == "ckpt" and again.artifacts == manifest.artifacts
    assert again.current == manifest.current == state["current"]
    assert read_manifest(tmp_path)["artifacts"] == manifest.artifacts


def test_a_write_appends_only_what_changed_and_rewrites_only_what_is_live(tmp_path):
    """The write cost does not grow with the records already there: ``manifest.json``
    keeps the same size, the history keeps its bytes and gains one line per record."""
    manifest = Manifest(tmp_path, "ckpt")
    sizes, history = [], b""
    for epoch in range(1, 301):
        _record(manifest, tmp_path, epoch)
        now = (tmp_path / HISTORY_NAME).read_bytes()
        assert now.startswith(history) and now[len(history):].count(b"\n") == 1
        history = now
        sizes.append((tmp_path / MANIFEST_NAME).stat().st_size)
    assert max(sizes) - min(sizes) <= 64  # the digits of the epoch and the values only
    assert len(Manifest(tmp_path).artifacts) == 300


def test_retention_appends_a_forget_line(tmp_path):
    manifest = Manifest(tmp_path, "ckpt")
    for epoch in (1, 2, 3):
        _record(manifest, tmp_path, epoch, f"best_loss.epoch{epoch:04d}.keras")
        _record(manifest, tmp_path, epoch)
    gone = "best_loss.epoch0002.keras"
    manifest.artifacts = [a for a in manifest.artifacts if Path(a["path"]).name != gone]
    manifest.pending = [{"op": "delete", "path": gone}]
    manifest.write()
    assert _history_lines(tmp_path)[-1] == {"op": "forget", "seqs": [2], "paths": [gone]}
    again = Manifest(tmp_path)
    assert again.artifacts == manifest.artifacts and len(again.artifacts) == 5
    assert gone not in {Path(a["path"]).name for a in again.current}
    assert again.pending == [{"op": "delete", "path": gone}]
    _record(again, tmp_path, 4)  # appends keep working after a forget
    assert len(Manifest(tmp_path).artifacts) == 6


def test_forgetting_a_files_last_entry_brings_back_its_previous_one(tmp_path):
    manifest = Manifest(tmp_path, "ckpt")
    for epoch in (1, 2):
        _record(manifest, tmp_path, epoch)
    manifest.artifacts = manifest.artifacts[:1]
    manifest.write()
    assert [a["epoch"] for a in manifest.current] == [1]
    assert Manifest(tmp_path).current == manifest.current


def test_the_single_file_manifest_of_the_previous_release_is_read_and_carried_on(tmp_path):
    entries = [Artifact("checkpoint", str(tmp_path / "best_loss.keras"), epoch,
                        {"loss": 1 / epoch}, "loss", "ckpt").to_dict() for epoch in (1, 2)]
    (tmp_path / "best_loss.keras").write_text("epoch 3")
    old = {"version": 1, "callback": "ckpt",
           "basis": {"best": {"loss": {"value": 0.5, "epoch": 2}}},
           "artifacts": entries,
           "pending": [{"op": "rename", "temp": ".tmp-gone-best_loss.keras",
                        "artifact": dict(entries[-1], epoch=3),
                        "best": {"key": "loss", "value": 0.3, "epoch": 3}}]}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(old, indent=2))
    manifest = Manifest(tmp_path, "ckpt")
    assert manifest.artifacts == entries and manifest.pending == old["pending"]
    assert [a["epoch"] for a in manifest.current] == [2]
    assert manifest.recover() == (["best_loss.keras"], [])  # written as version 2
    state = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert state["version"] == 2 and "pending" not in state
    assert state["basis"]["best"]["loss"] == {"value": 0.3, "epoch": 3}
    assert [line["artifact"]["epoch"] for line in _history_lines(tmp_path)] == [1, 2, 3]
    again = Manifest(tmp_path)
    assert [a["epoch"] for a in again.artifacts] == [1, 2, 3]
    assert again.basis_state == state["basis"]


def test_lines_no_manifest_json_covers_are_ignored_then_replaced(tmp_path, monkeypatch):
    """A write that stopped between the history append and the rename of
    ``manifest.json`` (a full disk; a kill), or a line cut short, is not read."""
    manifest = Manifest(tmp_path, "ckpt")
    _record(manifest, tmp_path, 1)
    committed = (tmp_path / HISTORY_NAME).read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(manifest_module, "atomic_write_text", full)
    manifest.add(Artifact("checkpoint", str(tmp_path / "best_loss.keras"), 2, {}, "loss"))
    with pytest.raises(FileWriteError, match=f"writing {MANIFEST_NAME} in .*No space left"):
        manifest.write()
    monkeypatch.undo()
    assert (tmp_path / HISTORY_NAME).read_bytes() != committed  # appended, not covered
    with open(tmp_path / HISTORY_NAME, "ab") as history:
        history.write(b'{"op": "add", "seq": 9, "artifa')  # and a torn line
    assert [a["epoch"] for a in Manifest(tmp_path).artifacts] == [1]
    manifest.write()  # the next write carries the change again, once
    assert [line["seq"] for line in _history_lines(tmp_path)] == [0, 1]
    assert [a["epoch"] for a in Manifest(tmp_path).artifacts] == [1, 2]


def test_a_failed_history_append_keeps_the_previous_manifest(tmp_path, monkeypatch):
    manifest = Manifest(tmp_path, "ckpt")
    _record(manifest, tmp_path, 1)
    manifest.add(Artifact("checkpoint", str(tmp_path / "best_loss.keras"), 2, {}, "loss"))
    before = (tmp_path / MANIFEST_NAME).read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # a few bytes land, then the disk is full
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(FileWriteError, match=f"writing {HISTORY_NAME} in .*No space left"):
        manifest.write()
    monkeypatch.undo()
    assert (tmp_path / MANIFEST_NAME).read_bytes() == before
    assert [a["epoch"] for a in Manifest(tmp_path).artifacts] == [1]
    manifest.write()
    assert [a["epoch"] for a in Manifest(tmp_path).artifacts] == [1, 2]


def test_a_history_shorter_than_manifest_json_says_is_an_error(tmp_path):
    manifest = Manifest(tmp_path, "ckpt")
    _record(manifest, tmp_path, 1)
    _record(manifest, tmp_path, 2)
    data = (tmp_path / HISTORY_NAME).read_bytes()
    (tmp_path / HISTORY_NAME).write_bytes(data[:-20])
    with pytest.raises(ValueError, match=f"{HISTORY_NAME} holds"):
        Manifest(tmp_path)
    (tmp_path / HISTORY_NAME).write_bytes(data.replace(b'"op":"add"', b'"op":"???"', 1))
    with pytest.raises(ValueError, match="cannot read manifest history .*line 1"):
        Manifest(tmp_path)


def test_no_manifest_means_no_record(tmp_path):
    with pytest.raises(FileNotFoundError, match=MANIFEST_NAME):
        read_manifest(tmp_path)
    assert Manifest(tmp_path, "ckpt").artifacts == []


WRITER = """
import sys
from pathlib import Path
from cvml_core.artifacts.artifact import Artifact
from cvml_core.artifacts.manifest import Manifest
folder = Path(sys.argv[1])
manifest = Manifest(folder, "ckpt")
epoch = len(manifest.artifacts)
print("ready", flush=True)
while True:
    epoch += 1
    entry = Artifact("checkpoint", str(folder / "best_loss.keras"), epoch, {"loss": 1 / epoch},
                     "loss", "ckpt", {"pad": "x" * 2000})
    manifest.pending = [{"op": "rename", "temp": ".tmp-x", "artifact": entry.to_dict()}]
    manifest.write()
    manifest.add(entry)
    manifest.basis_state = {"best": {"loss": {"value": 1 / epoch, "epoch": epoch}}}
    manifest.pending = []
    manifest.write()
"""


def test_sigkills_of_a_writer_leave_a_readable_manifest(tmp_path):
    """A writer killed at random moments: each time the manifest reads back, its
    entries are epochs 1..n in order (no gap, no duplicate), its best is its last entry
    or the one pending, and the next writer carries on from it."""
    rng = random.Random(0)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    seen = 0
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        manifest = Manifest(tmp_path)
        epochs = [a["epoch"] for a in manifest.artifacts]
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= seen
        seen = len(epochs)
        best = manifest.basis_state["best"]["loss"]["epoch"] if manifest.basis_state else 0
        assert best == (epochs[-1] if epochs else 0)
        assert [a["epoch"] for a in manifest.current] == epochs[-1:]
    assert seen > 0
