"""Two tf_keras workers on 127.0.0.1 with ``MultiWorkerMirroredStrategy``.

Keras 3 does not support ``MultiWorkerMirroredStrategy`` (keras issue 20585); teams
that need it use tf_keras (``TF_USE_LEGACY_KERAS=1``). Both workers run every read
(variable reads for a save, ``predict`` for images: collective under the strategy);
only the chief (worker 0) writes. Runs in ``nox -s backends``; skipped without tf_keras.
"""

from __future__ import annotations

import pytest

from cvml_core.artifacts.manifest import read_manifest

pytest.importorskip("tf_keras")


def test_two_tf_keras_workers_decide_alike_and_only_worker_0_writes(
    tmp_path, free_port, run_processes, check_one_writer
):
    import tf_keras

    ports = f"{free_port()},{free_port()}"
    env = {"TF_USE_LEGACY_KERAS": "1"}
    first, second = run_processes("tf_keras_worker.py", ports, tmp_path, env)
    check_one_writer(first, second, tmp_path, ["ckpt", "tflite"])
    files = sorted((tmp_path / "ckpt").glob("*.keras"))
    assert files
    for path in files:
        tf_keras.models.load_model(path)
    # The crashed run (CkptCallback drives tf_keras' BackupAndRestore): both workers
    # resume at epoch index 2 after 2 of its batches and end at an uninterrupted count.
    for result in (first, second):
        assert result["iterations"] == 16  # 4 epochs of 4 batches, uninterrupted
        assert result["backup"] == {
            "resumed_from": [], "first_epoch": [2, 10], "resumed_iterations": 16,
        }
    assert not list((tmp_path / "backup_run" / "ckpt" / "backup").rglob("*"))  # deleted
    tflite = read_manifest(tmp_path / "tflite")
    assert tflite["artifacts"] and all(a["details"]["verified"] for a in tflite["artifacts"])
