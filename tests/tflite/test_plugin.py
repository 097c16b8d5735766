"""Registration, lazy imports and argument checking of TFLiteCallback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import cvml_core


def test_package_and_plugin_import_without_tensorflow():
    code = (
        "import sys, cvml_tflite, cvml_core;"
        "names = [c.name for c in cvml_core.available_callbacks()];"
        "assert 'tflite' in names, names;"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    env = {**os.environ, "CVML_PLUGINS": "tflite"}  # other plugins are not ours to test
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=env)


def test_create_by_name(tmp_path):
    from cvml_tflite import TFLiteCallback

    cb = cvml_core.create_callback("tflite", log_dir=tmp_path, basis_dict={"val_loss": "min"})
    assert type(cb) is TFLiteCallback
    assert cb.folder == tmp_path / "tflite"
    assert cb.wants_sample_data


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"quantization": "int4"}, ["quantization", "'int4'", "float16", "dynamic", "int8"]),
        ({"quantization": "INT8"}, ["quantization", "'INT8'"]),
        ({"quantization": "int8"}, ["sample_data", "int8", "sample_data=None"]),
        ({"max_error": -1.0}, ["max_error=-1.0"]),
        ({"max_error": float("nan")}, ["max_error=nan"]),
        ({"min_top1_agreement": 1.5}, ["min_top1_agreement=1.5"]),
        ({"verify_samples": 0}, ["verify_samples=0"]),
        ({"worker_max_conversions": 0}, ["worker_max_conversions=0"]),
        ({"worker_max_rss_mb": 0}, ["worker_max_rss_mb=0"]),
        ({"strict": "yes"}, ["strict='yes'"]),
        ({"at_train_end": 1}, ["at_train_end=1"]),
        ({"sample_data": np.zeros((0, 4))}, ["sample_data", "(0, 4)"]),
        ({"frequency": 0}, ["frequency=0"]),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, names):
    from cvml_tflite import TFLiteCallback

    with pytest.raises(ValueError) as info:
        TFLiteCallback(tmp_path, {"val_loss": "min"}, **kwargs)
    for name in names:
        assert name in str(info.value)


def test_user_sample_data_wins_over_handed_over(tmp_path):
    from cvml_tflite import TFLiteCallback

    mine = np.ones((4, 3), np.float32)
    cb = TFLiteCallback(tmp_path, {"val_loss": "min"}, sample_data=mine)
    cb.set_sample_data(np.zeros((4, 3)), np.zeros(4))
    assert cb.sample_data[0] is not None and float(cb.sample_data[0].sum()) == 12.0

    other = TFLiteCallback(tmp_path / "b", {"val_loss": "min"})
    other.set_sample_data(np.zeros((4, 3)), np.zeros(4))
    assert other.sample_data[0].shape == (4, 3)
