"""A real ``tensorboard`` server on 127.0.0.1 serves what the callback wrote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from cvml_tb import TensorboardCallback

WAIT_SECONDS = 120  # an upper bound for the server to start and load, not a speed check


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url, raw=False):
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    return body if raw else json.loads(body)


@pytest.fixture
def tensorboard_server(tmp_path):
    """Start ``tensorboard --logdir`` for a folder; yields ``start(logdir) -> base URL``."""
    procs = []

    def start(logdir):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
             "--host", "127.0.0.1", "--port", str(port), "--load_fast=false",
             "--reload_interval", "1"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "tensorboard.log", "wb"),
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        procs.append(proc)
        return f"http://127.0.0.1:{port}", proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_tags(base, proc, log):
    """Poll the scalars plugin until both runs are listed (bounded)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tensorboard exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            tags = _get(f"{base}/data/plugin/scalars/tags")
            if {"train", "validation"} <= set(tags):
                return tags
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"tensorboard did not serve the runs in time: {log.read_text()[-2000:]}")


def test_tensorboard_serves_scalars_and_images(
    tmp_path, cnn, images_data, tensorboard_server
):
    x, y = images_data
    log_dir = tmp_path / "run"
    cb = TensorboardCallback(log_dir, {"val_loss": "min"}, image_shape=(8, 8, 1),
                             sample_data=(x[:8], y[:8]))
    cnn().fit(x, y, validation_data=(x[:16], y[:16]), epochs=2, batch_size=16, verbose=0,
              callbacks=[cb])

    base, proc = tensorboard_server(log_dir / "tb")
    scalar_tags = _wait_for_tags(base, proc, tmp_path / "tensorboard.log")
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(scalar_tags["train"])
    assert {"epoch_loss", "best/val_loss", "best_epoch/val_loss"} <= set(
        scalar_tags["validation"]
    )
    query = urllib.parse.urlencode({"run": "validation", "tag": "epoch_loss"})
    points = _get(f"{base}/data/plugin/scalars/scalars?{query}")
    assert [step for _, step, _ in points] == [1, 2]

    listing = _get(f"{base}/data/plugins_listing")
    assert listing["images"]["enabled"] and listing["text"]["enabled"]
    image_tags = _get(f"{base}/data/plugin/images/tags")
    assert image_tags["validation"]["samples/grid"]["samples"] == 1
    query = urllib.parse.urlencode({"run": "validation", "tag": "samples/grid", "sample": 0})
    entries = _get(f"{base}/data/plugin/images/images?{query}")
    written = [a["epoch"] for a in cb.manifest.artifacts if a["kind"] == "tensorboard-images"]
    assert written[0] == 1 and [entry["step"] for entry in entries] == written
    png = _get(f"{base}/data/plugin/images/individualImage?{entries[0]['query']}", raw=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    text_tags = _get(f"{base}/data/plugin/text/tags")
    assert "samples/labels" in text_tags["validation"] and "run/model" in text_tags["train"]
