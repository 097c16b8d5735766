"""Without TensorFlow: the core imports, lists its plugins, and TrainInfer says what to install."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_core_and_listing_import_no_tensorflow() -> None:
    code = (
        "import sys, cvml_core\n"
        "names = sorted(cb.name for cb in cvml_core.available_callbacks())\n"
        "from cvml_core import TrainInfer\n"
        "print(names, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, tf_loaded = out.stdout.rsplit(" ", 1)
    assert "ckpt" in names
    assert tf_loaded.strip() == "False"


def test_cvml_plugins_lists_ckpt() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cvml_core.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ckpt" in json.dumps(json.loads(out.stdout))


def test_train_infer_names_the_train_extra() -> None:
    import keras

    from cvml_core import TrainInfer

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ImportError, match=r'pip install "cvml-core\[train\]"'):
        TrainInfer(model)


def test_demo_names_the_demo_extra(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cvml_core.cli", "demo", "--log-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert 'pip install "cvml-core[demo]"' in out.stderr
