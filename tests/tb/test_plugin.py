"""``tb`` is registered by entry point, lists without TensorFlow, and checks its arguments."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
        "import sys, cvml_core, cvml_tb\n"
        "names = [c.name for c in cvml_core.available_callbacks()]\n"
        "assert 'tb' in names, names\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"class_names": "abc"}, "class_names='abc' of type str"),
        ({"class_names": 5}, "class_names=5 of type int"),
        ({"class_names": ["cat", 2]}, "class_names=['cat', 2] of type list"),
        ({"write_model_summary": "no"}, "write_model_summary='no' of type str"),
        ({"write_model_summary": None}, "write_model_summary=None of type NoneType"),
        ({"write_graph": "no"}, "write_graph='no' of type str"),
    ],
)
def test_bad_class_names_and_write_model_summary_are_refused(tmp_path, kwargs, received):
    from cvml_tb import TensorboardCallback

    name = next(iter(kwargs))
    with pytest.raises(ValueError) as info:
        TensorboardCallback(tmp_path, {"val_loss": "min"}, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{name} must be")
    assert f"Received: {received}" in message
    allowed = "list of str" if name == "class_names" else "True or False"
    assert allowed in message


def test_good_class_names_and_write_model_summary_are_kept(tmp_path):
    from cvml_tb import TensorboardCallback

    cb = TensorboardCallback(
        tmp_path, {"val_loss": "min"}, class_names=("cat", "dog"), write_model_summary=False
    )
    assert cb.class_names == ["cat", "dog"]
    assert cb.write_model_summary is False
