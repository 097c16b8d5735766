"""Helpers of the multi-process tests: free ports, bounded processes, the common checks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cvml_core.artifacts.manifest import read_manifest

HERE = Path(__file__).parent
TIMEOUT = 600  # seconds per process: a guard against a hang, not a timing assertion


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def free_port():
    return _free_port


@pytest.fixture
def run_processes():
    """``run_processes(script, address_arg, log_dir, env)``: two processes of
    ``script`` (``<index> <address_arg> <log_dir>``), each bounded by a timeout; their
    last stdout lines as JSON, ordered by index."""

    def run(script: str, address: str, log_dir: Path, env: dict[str, str]) -> list[dict]:
        procs = [
            subprocess.Popen(
                [sys.executable, str(HERE / script), str(i), address, str(log_dir)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=dict(os.environ, **env),
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
        return sorted(results, key=lambda r: r["process"])

    return run


@pytest.fixture
def check_one_writer():
    """The checks of every multi-process run: process 0 is the only writer, both take
    the same decisions, no stray temporary file, no file recorded twice, no
    TensorBoard step written twice, and tb's sample images written (images on)."""

    def check(first: dict, second: dict, log_dir: Path, manifests: list[str]) -> None:
        from tensorboard.backend.event_processing import event_accumulator as ea

        assert set(first["chief"].values()) == {True}
        assert set(second["chief"].values()) == {False}
        assert first["decisions"] == second["decisions"]  # the same bests after each epoch
        assert first["announced"] and second["announced"] == []
        assert [p for p in log_dir.rglob("*") if p.name.startswith(".tmp-")] == []
        for name in manifests:
            manifest = read_manifest(log_dir / name)
            written = [(a["path"], a["epoch"]) for a in manifest["artifacts"]]
            assert len(written) == len(set(written)), written
            assert manifest["basis"]["best"] == first["decisions"][-1][name]
        for run in ("train", "validation"):
            acc = ea.EventAccumulator(str(log_dir / "tb" / run), size_guidance={ea.TENSORS: 0})
            acc.Reload()
            assert acc.Tags()["tensors"], run
            for tag in acc.Tags()["tensors"]:
                steps = [event.step for event in acc.Tensors(tag)]
                assert len(steps) == len(set(steps)), (run, tag, steps)
        images = ea.EventAccumulator(str(log_dir / "tb" / "validation"),
                                     size_guidance={ea.TENSORS: 0})
        images.Reload()
        assert "best/samples" in images.Tags()["tensors"], images.Tags()["tensors"]
        for event in images.Tensors("best/samples"):  # [width, height, PNG]
            assert event.tensor_proto.string_val[2].startswith(b"\x89PNG\r\n\x1a\n")

    return check
