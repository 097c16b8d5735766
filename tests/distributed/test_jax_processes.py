"""Two JAX processes on 127.0.0.1 with ``keras.distribution.DataParallel``.

Every process takes the same decisions and runs the same reads; only process 0
writes: one copy of each file, no duplicate TensorBoard step, no stray temporary
file, and everything written loads. Runs in ``nox -s backends``; skipped without JAX.
"""

from __future__ import annotations

import pytest

from cvml_core.artifacts.manifest import read_manifest

pytest.importorskip("jax")


def test_two_jax_processes_decide_alike_and_only_process_0_writes(
    tmp_path, free_port, run_processes, check_one_writer
):
    import keras

    env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    first, second = run_processes("jax_process.py", str(free_port()), tmp_path, env)
    check_one_writer(first, second, tmp_path, ["ckpt", "tflite"])
    files = sorted((tmp_path / "ckpt").glob("*.keras"))
    assert files  # the loop below proves nothing over no file
    for path in files:
        keras.models.load_model(path)
    tflite = read_manifest(tmp_path / "tflite")
    assert tflite["artifacts"] and all(a["details"]["verified"] for a in tflite["artifacts"])
