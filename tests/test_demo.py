"""``cvml demo``, run in-process with fewer epochs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from cvml_core import cli
from cvml_core.plugin_host import loader as plugins

pytest.importorskip("sklearn")


def test_the_demo_trains_with_every_installed_callback(tmp_path, capsys):
    log_dir = tmp_path / "demo"
    assert cli.main(["demo", "--log-dir", str(log_dir), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out
    assert re.search(r"val_loss \(min\): \d+\.\d+ at epoch [12]", out)
    assert re.search(r"val_accuracy \(max\): \d+\.\d+ at epoch [12]", out)
    names = [info.name for info in plugins.get_registry().available()]
    for name in names:
        assert (log_dir / name).is_dir(), f"callback {name} wrote nothing"
        assert f"{name:8s} folder: {log_dir / name}" in out
    printed = re.findall(r"^  \S+\s+(\S+)  \(", out, flags=re.MULTILINE)
    assert all(Path(p).exists() for p in printed)
    if "ckpt" in names:
        assert any("/ckpt/" in p for p in printed)
    if "tb" in names:
        assert f"tensorboard --logdir {log_dir}" in out
    if "tflite" in names:
        assert re.search(r"\.tflite: float32, [\d.]+ KiB, max abs error", out)
        assert "verified" in out
    # a second demo into the same folder replaces the first run (it holds the marker)
    (log_dir / "stale.txt").write_text("from the first run")
    assert cli.main(["demo", "--log-dir", str(log_dir), "--epochs", "1"]) == 0
    assert not (log_dir / "stale.txt").exists() and ", 1 epoch," in capsys.readouterr().out


def test_the_demo_replaces_its_own_run_but_refuses_other_folders(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli.main(["demo", "--log-dir", str(foreign), "--epochs", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_the_demo_asks_for_scikit_learn_when_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    assert cli.main(["demo", "--log-dir", str(tmp_path / "d"), "--epochs", "1"]) == 1
    assert 'pip install "cvml-core[demo]"' in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_the_readme_gives_the_demo_models_size():
    from cvml_core.train.demo import build_model

    count = build_model().count_params()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"small CNN ({count:,} weights)" in readme
