"""tests/notf: cvml-core and cvml-ckpt where TensorFlow is not installed (``nox -s notf``,
Keras on JAX or torch). Skipped wherever TensorFlow is importable."""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed: tests/notf runs without it", allow_module_level=True)
