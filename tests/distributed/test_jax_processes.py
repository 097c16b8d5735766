"""Two JAX processes on 127.0.0.1 with ``keras.distribution.DataParallel``.

Every process takes the same decisions and runs the same reads; only process 0
writes: one copy of each file, no duplicate TensorBoard step, no stray temporary
file, and everything written loads. Each process is bounded by a timeout.
Runs in ``nox -s jax`` (JAX installed); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")

HERE = Path(__file__).parent
TIMEOUT = 600  # seconds per process: a guard against a hang, not a timing assertion


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_processes(log_dir: Path) -> list[dict]:
    port = str(_free_port())
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "jax_process.py"), str(i), port, str(log_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for i in range(2)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err[-4000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def test_two_jax_processes_decide_alike_and_only_process_0_writes(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    import keras

    first, second = sorted(_run_processes(tmp_path), key=lambda r: r["process"])
    assert set(first["chief"].values()) == {True}
    assert set(second["chief"].values()) == {False}
    assert first["decisions"] == second["decisions"]  # the same bests after every epoch
    assert first["announced"] and second["announced"] == []

    stray = [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert stray == []
    for name in ("ckpt", "tflite"):
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        written = [(a["path"], a["epoch"]) for a in manifest["artifacts"]]
        assert len(written) == len(set(written)), written  # no file recorded twice
        final = first["decisions"][-1][name]
        assert manifest["basis"]["best"] == final
    for path in (tmp_path / "ckpt").glob("*.keras"):
        keras.models.load_model(path)
    tflite = json.loads((tmp_path / "tflite" / "manifest.json").read_text())
    assert all(a["details"]["verified"] for a in tflite["artifacts"])

    for run in ("train", "validation"):
        acc = ea.EventAccumulator(str(tmp_path / "tb" / run), size_guidance={ea.TENSORS: 0})
        acc.Reload()
        for tag in acc.Tags()["tensors"]:
            steps = [event.step for event in acc.Tensors(tag)]
            assert len(steps) == len(set(steps)), (run, tag, steps)
    assert np.isfinite(first["decisions"][-1]["ckpt"]["val_loss"]["value"])
