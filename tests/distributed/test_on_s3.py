"""The multi-process runs with ``log_dir`` on S3 (SeaweedFS on 127.0.0.1): one writer,
every object loads, and both processes start from the bests an earlier run left in the
store (a one-process ckpt run, written first, stands in for it to keep CI's time).

The JAX test runs with ``KERAS_BACKEND=jax``, the tf_keras one with
``TF_USE_LEGACY_KERAS=1`` (``nox -s backends`` runs this file under both).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "storage"))



@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("s3fs")
    from servers import SeaweedS3

    server = SeaweedS3().start()
    yield server
    server.stop()


def _mirror(server, bucket, target: Path) -> Path:
    """The run's objects, downloaded, for TensorBoard's reader and Keras' loader."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options())
    fs.get(f"{bucket}/run", str(target), recursive=True)
    return target


def _seed(url: str, server) -> dict:
    """An earlier run's ckpt folder in the store: its bests, as a resumed run reads them."""
    from cvml_ckpt import CkptCallback

    from cvml_core.keras_compat import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    cb = CkptCallback(url, {"val_loss": "min", "val_accuracy": "max"},
                      storage_options=server.storage_options())
    cb.set_model(model)
    cb.on_train_begin({})
    cb.on_epoch_end(0, {"val_loss": 0.1, "val_accuracy": 0.99})
    cb.on_train_end({})
    return cb.policy.state_dict()["best"]


def _runs(s3, tmp_path, run_processes, check_one_writer, script, address, env):
    bucket = s3.bucket(f"cvml-{script.split('_')[0].replace('tf', 'tfk')}-mp")
    url = f"s3://{bucket}/run"
    seeded = _seed(url, s3)
    first, second = run_processes(script, address(), url, dict(env, **s3.env()))
    assert first["start"]["ckpt"] == second["start"]["ckpt"] == seeded
    local = _mirror(s3, bucket, tmp_path / "run")
    check_one_writer(first, second, local, ["ckpt", "tflite"])
    return local, (first, second)


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="KERAS_BACKEND=jax only")
def test_two_jax_processes_with_log_dir_on_s3(s3, tmp_path, free_port, run_processes,
                                              check_one_writer):
    pytest.importorskip("jax")
    import keras

    env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    local, results = _runs(s3, tmp_path, run_processes, check_one_writer, "jax_process.py",
                           lambda: str(free_port()), env)
    for result in results:  # the crashed run resumed from its backup on S3 (see workload)
        assert result["backup"]["resumed_from"] == [2, 2]
        assert result["backup"]["resumed_iterations"] == result["iterations"] == 16
    assert not (local / "backup_run" / "ckpt" / "backup.weights.h5").exists()
    for path in (local / "ckpt").glob("*.keras"):
        keras.models.load_model(path)


@pytest.mark.skipif(os.environ.get("TF_USE_LEGACY_KERAS") != "1",
                    reason="TF_USE_LEGACY_KERAS=1 only")
def test_two_tf_keras_workers_with_log_dir_on_s3(s3, tmp_path, free_port, run_processes,
                                                 check_one_writer):
    tf_keras = pytest.importorskip("tf_keras")
    env = {"TF_USE_LEGACY_KERAS": "1"}
    local, _ = _runs(s3, tmp_path, run_processes, check_one_writer, "tf_keras_worker.py",
                  lambda: f"{free_port()},{free_port()}", env)
    files = sorted((local / "ckpt").glob("*.keras"))
    assert files
    for path in files:
        tf_keras.models.load_model(path)
