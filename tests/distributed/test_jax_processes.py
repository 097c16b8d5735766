"""Two JAX processes on 127.0.0.1 with ``keras.distribution.DataParallel``.

Every process takes the same decisions and runs the same reads; only process 0
writes: one copy of each file, no duplicate TensorBoard step, no stray temporary
file, and everything written loads; and a run that backs up every 2 steps, crashed
in every process, resumes at the backup's step in both. Runs in ``nox -s backends``;
skipped without JAX.
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
    # The crashed run: the chief wrote the backup after batch 2 of epoch 3, every
    # process restored it and resumed there, ending at an uninterrupted run's count.
    for result in (first, second):
        assert result["iterations"] == 16  # 4 epochs of 4 batches, uninterrupted
        assert result["backup"] == {
            "resumed_from": [2, 2], "first_epoch": [2, 10],
            "resumed_iterations": result["iterations"],
        }
    assert not (tmp_path / "backup_run" / "ckpt" / "backup.weights.h5").exists()  # run done
    tflite = read_manifest(tmp_path / "tflite")
    assert tflite["artifacts"] and all(a["details"]["verified"] for a in tflite["artifacts"])
