"""The package registers ``tb`` by entry point and lists without importing TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import cvml_core


def test_tb_is_registered_with_its_distribution():
    infos = {info.name: info for info in cvml_core.available_callbacks()}
    assert infos["tb"].distribution == "cvml-tb"
    assert infos["tb"].target == "cvml_tb.callback:TensorboardCallback"
    assert "TensorBoard" in infos["tb"].summary


def test_create_callback_by_name(tmp_path):
    from cvml_tb import TensorboardCallback

    cb = cvml_core.create_callback("tb", log_dir=tmp_path, basis_dict={"val_loss": "min"})
    assert isinstance(cb, TensorboardCallback)
    assert cb.folder == tmp_path / "tb"
    assert cb.wants_sample_data is False


def test_listing_does_not_import_tensorflow():
    code = (
        "import sys, cvml_core, cvml_tb, cvml_tb.plugin\n"
        "names = [c.name for c in cvml_core.available_callbacks()]\n"
        "assert 'tb' in names, names\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
