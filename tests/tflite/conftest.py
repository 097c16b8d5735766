"""Fixtures of the cvml-tflite tests.

All tests share the conversion worker process of this pytest process (it is
module-level in ``cvml_tflite.process``), so TensorFlow is imported by few workers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from cvml_core.artifacts.manifest import read_manifest as read_folder_manifest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:  # the worker inherits sys.path and imports the test layers
    sys.path.insert(0, str(HERE))


@pytest.fixture
def read_manifest():
    def read(log_dir):
        return read_folder_manifest(Path(log_dir) / "tflite")

    return read


@pytest.fixture
def run_tflite():
    """Run a .tflite file on float inputs with LiteRT, (de)quantizing int8 as the file says."""
    from ai_edge_litert.interpreter import Interpreter

    def run(path, x):
        interpreter = Interpreter(model_path=str(path))
        runner = interpreter.get_signature_runner()
        (name, details), = runner.get_input_details().items()
        x = np.asarray(x, np.float32)
        if details["dtype"] == np.int8:
            scale, zero = details["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        (out_name, out), = runner(**{name: x}).items()
        out_details = runner.get_output_details()[out_name]
        if out.dtype == np.int8:
            scale, zero = out_details["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out, details["dtype"]

    return run
