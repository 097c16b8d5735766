"""tests/notf: cvml-core and cvml-ckpt where TensorFlow is not installed (``nox -s notf``,
Keras on JAX or torch). Skipped wherever TensorFlow is importable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TF_INSTALLED = importlib.util.find_spec("tensorflow") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not TF_INSTALLED:
        return
    skip = pytest.mark.skip(reason="TensorFlow is installed: tests/notf runs without it")
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)
