"""The multi-process runs with ``log_dir`` on S3 (SeaweedFS on 127.0.0.1): one writer,
every object loads; for JAX a second run of both processes reads the same bests from
the store on each (tf_keras runs once, to keep CI's time).

The JAX test runs with ``KERAS_BACKEND=jax``, the tf_keras one with
``TF_USE_LEGACY_KERAS=1`` (``nox -s backends`` runs this file under both).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "storage"))

from cvml_core.manifest import read_manifest  # noqa: E402


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


def _runs(s3, tmp_path, run_processes, check_one_writer, script, address, env, again):
    bucket = s3.bucket(f"cvml-{script.split('_')[0].replace('tf', 'tfk')}-mp")
    url = f"s3://{bucket}/run"
    env = dict(env, **s3.env())
    first, second = run_processes(script, address(), url, env)
    local = _mirror(s3, bucket, tmp_path / "one")
    check_one_writer(first, second, local, ["ckpt", "tflite"])
    bests = {name: read_manifest(local / name)["basis"]["best"] for name in ("ckpt", "tflite")}
    if not again:
        return local
    # again on the same log_dir: both processes start from the bests in the store
    again_first, again_second = run_processes(script, address(), url, env)
    assert again_first["decisions"] == again_second["decisions"]
    assert again_first["start"] == again_second["start"] == bests
    return _mirror(s3, bucket, tmp_path / "two")


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="KERAS_BACKEND=jax only")
def test_two_jax_processes_with_log_dir_on_s3(s3, tmp_path, free_port, run_processes,
                                              check_one_writer):
    pytest.importorskip("jax")
    import keras

    env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    local = _runs(s3, tmp_path, run_processes, check_one_writer, "jax_process.py",
                  lambda: str(free_port()), env, again=True)
    for path in (local / "ckpt").glob("*.keras"):
        keras.models.load_model(path)


@pytest.mark.skipif(os.environ.get("TF_USE_LEGACY_KERAS") != "1",
                    reason="TF_USE_LEGACY_KERAS=1 only")
def test_two_tf_keras_workers_with_log_dir_on_s3(s3, tmp_path, free_port, run_processes,
                                                 check_one_writer):
    tf_keras = pytest.importorskip("tf_keras")
    env = {"TF_USE_LEGACY_KERAS": "1"}
    local = _runs(s3, tmp_path, run_processes, check_one_writer, "tf_keras_worker.py",
                  lambda: f"{free_port()},{free_port()}", env, again=False)
    files = sorted((local / "ckpt").glob("*.keras"))
    assert files
    for path in files:
        tf_keras.models.load_model(path)
