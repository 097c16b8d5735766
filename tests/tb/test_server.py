"""A real ``tensorboard`` server on 127.0.0.1 serves what the callback wrote, as specified.

One demo-like run (a small CNN on 8x8 images of 4 classes, through ``model.fit`` with
``keras.callbacks.TensorBoard`` beside it), read back through TensorBoard's HTTP API:
tags, steps, which groups TensorBoard opens, descriptions, the graph and the images.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from cvml_tb import TensorboardCallback
from cvml_tb import images as img

WAIT_SECONDS = 120  # an upper bound for the server to start and load, not a speed check
CVML_RUNS = ("cvml/tb/train", "cvml/tb/validation")
KERAS_RUNS = ("keras/train", "keras/validation")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url, raw=False):
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    return body if raw else json.loads(body)


def _query(**params):
    return urllib.parse.urlencode(params)


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


def _wait_for_runs(base, proc, log, runs):
    """Poll the scalars plugin until ``runs`` are listed (bounded)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tensorboard exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            tags = _get(f"{base}/data/plugin/scalars/tags")
            if set(runs) <= set(tags):
                return tags
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"tensorboard did not serve the runs in time: {log.read_text()[-2000:]}")


def _tb_compare(a, b):
    """TensorBoard's tag order (its frontend's ``compareTagNames``): digit runs compare
    as numbers, and "/" and digits sort before any other character."""
    i = j = 0
    while True:
        if i == len(a):
            return 0 if j == len(b) else -1
        if j == len(b):
            return 1
        if a[i].isdigit() and b[j].isdigit():
            i2, j2 = i, j
            while i2 < len(a) and a[i2].isdigit():
                i2 += 1
            while j2 < len(b) and b[j2].isdigit():
                j2 += 1
            x, y = int(a[i:i2]), int(b[j:j2])
            if x != y:
                return -1 if x < y else 1
            i, j = i2, j2
            continue
        special_a, special_b = a[i] == "/" or a[i].isdigit(), b[j] == "/" or b[j].isdigit()
        if special_a and not special_b:
            return -1
        if special_b and not special_a:
            return 1
        if not special_a and a[i] != b[j]:
            return -1 if a[i] < b[j] else 1
        i, j = i + 1, j + 1


def _groups(tags):
    """Tag groups in the order TensorBoard shows them (it opens the first two)."""
    groups = []
    for tag in sorted(set(tags), key=functools.cmp_to_key(_tb_compare)):
        name = tag.split("/", 1)[0]
        if name not in groups:
            groups.append(name)
    return groups


def _demo_like_data():
    """8x8 grey images of 4 classes (the brightest quadrant); the sample is sorted by
    class, so its first 8 are all class 0 (as 5 of the demo's first 8 were 6s)."""
    rng = np.random.default_rng(0)
    x = rng.random((96, 8, 8, 1)).astype("float32")
    quadrants = x.reshape(96, 2, 4, 2, 4).mean(axis=(2, 4)).reshape(96, 4)
    y = quadrants.argmax(axis=1).astype("int32")
    order = np.argsort(y[64:], kind="stable") + 64
    return (x[:64], y[:64]), (x[order], y[order])


def _model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, activation="softmax"),
        ],
        name="demo_like",
    )
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def test_tensorboard_serves_keras_compatible_curves_bests_graph_and_labelled_images(
    tmp_path, tensorboard_server
):
    import keras
    from PIL import Image

    (x, y), (x_dev, y_dev) = _demo_like_data()
    names = ["top-left", "top-right", "bottom-left", "bottom-right"]
    cb = TensorboardCallback(
        tmp_path / "cvml", {"val_loss": "min", "val_accuracy": "max"}, image_shape=(8, 8, 1),
        sample_data=(x_dev, y_dev), class_names=names,
    )
    theirs = keras.callbacks.TensorBoard(tmp_path / "keras")
    _model().fit(x, y, validation_data=(x_dev, y_dev), epochs=3, batch_size=16, verbose=0,
                 callbacks=[cb, theirs])  # 4 batches per epoch

    base, proc = tensorboard_server(tmp_path)
    scalar_tags = _wait_for_runs(base, proc, tmp_path / "tensorboard.log",
                                 CVML_RUNS + KERAS_RUNS)

    # Keras' scalars: the same tags, relative run names and steps, so the runs overlay
    for keras_run, cvml_run in zip(KERAS_RUNS, CVML_RUNS, strict=True):
        assert set(scalar_tags[keras_run]) <= set(scalar_tags[cvml_run])
        for tag in scalar_tags[keras_run]:
            theirs_steps = _get(f"{base}/data/plugin/scalars/scalars?"
                                + _query(run=keras_run, tag=tag))
            ours = _get(f"{base}/data/plugin/scalars/scalars?" + _query(run=cvml_run, tag=tag))
            assert [s for _, s, _ in ours] == [s for _, s, _ in theirs_steps], (cvml_run, tag)
    train, val = scalar_tags["cvml/tb/train"], scalar_tags["cvml/tb/validation"]
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(train)
    assert {"epoch_loss", "epoch_accuracy", "evaluation_loss_vs_iterations",
            "evaluation_accuracy_vs_iterations", "epoch_loss/best",
            "epoch_accuracy/best"} <= set(val)
    points = _get(f"{base}/data/plugin/scalars/scalars?"
                  + _query(run="cvml/tb/validation", tag="evaluation_loss_vs_iterations"))
    assert [s for _, s, _ in points] == [4, 8, 12]  # the optimizer's iterations

    # TensorBoard opens the first two groups: "best" (the exact bests and the samples,
    # pictures that are never smoothed), then the first training curves; each best
    # curve sits in its metric's group; no count is a (smoothed) scalar
    image_tags = _get(f"{base}/data/plugin/images/tags")
    histogram_tags = _get(f"{base}/data/plugin/histograms/tags")
    every_tag = [t for runs in (scalar_tags, image_tags, histogram_tags)
                 for tags in runs.values() for t in tags]
    groups = _groups(every_tag)
    assert groups[:2] == ["best", "epoch_accuracy"], groups
    assert sorted(t for t in every_tag if t.startswith("best/")) == [
        "best/samples", "best/values"
    ]
    assert "best/values" in image_tags["cvml/tb/train"]
    assert "best/samples" in image_tags["cvml/tb/validation"]
    assert _groups(["epoch_loss", "epoch_loss/best"]) == ["epoch_loss"]
    assert not any("best_epoch" in t for t in every_tag)
    best_text = _get(f"{base}/data/plugin/text/text?" + _query(run="cvml/tb/train",
                                                                tag="basis/best"))
    assert "<td>val_loss</td>\n<td>min</td>" in best_text[0]["text"]  # Markdown as HTML
    assert best_text[0]["step"] == 0
    # the exact bests as a picture, on each step where the text table is written
    values = image_tags["cvml/tb/train"]["best/values"]
    assert "exact best" in values["description"] and "basis/best" in values["description"]
    pictures = _get(f"{base}/data/plugin/images/images?"
                    + _query(run="cvml/tb/train", tag="best/values", sample=0))
    assert [p["step"] for p in pictures] == [t["step"] for t in best_text]
    assert "1-based" in best_text[0]["text"]  # how epochs and steps relate: said once
    assert all("1-based" not in t["text"] for t in best_text[1:])
    description = val["epoch_loss/best"]["description"]
    assert "Best val_loss so far" in description and "basis/best" in description

    # the model graph, as Keras writes it (Graphs tab, conceptual graph)
    graphs = _get(f"{base}/data/plugin/graphs/info")
    for run in ("cvml/tb/train", "keras/train"):
        assert graphs[run]["tags"]["keras"]["conceptual_graph"], graphs
    graph = _get(f"{base}/data/plugin/graphs/graph?"
                 + _query(run="cvml/tb/train", tag="keras", conceptual="true"), raw=True)
    assert b"demo_like/conv2d" in graph

    # images: one per image step; the description holds no per-step facts
    grid = image_tags["cvml/tb/validation"]["best/samples"]
    assert "green" in grid["description"] and "epoch 1" not in grid["description"]
    entries = _get(f"{base}/data/plugin/images/images?"
                   + _query(run="cvml/tb/validation", tag="best/samples", sample=0))
    written = [a for a in cb.manifest.artifacts if a["kind"] == "tensorboard-images"]
    assert [e["step"] for e in entries] == [a["details"]["step"] for a in written]
    assert entries[0]["step"] == 0
    labels = _get(f"{base}/data/plugin/text/text?"
                  + _query(run="cvml/tb/validation", tag="samples/labels"))
    for entry, artifact, label in zip(entries, written, labels, strict=True):
        png = _get(f"{base}/data/plugin/images/individualImage?{entry['query']}", raw=True)
        picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        details = artifact["details"]
        assert list(picture.shape[:2]) == details["size"]
        frames = [tuple(int(v) for v in picture[top - 1, left - 1])
                  for top, left, _, _ in details["cells"]]
        assert set(frames) <= {img.GREEN, img.RED}
        assert frames.count(img.GREEN) == details["correct"]
        # each cell's caption strip holds text (dark pixels) on its tint
        for top, left, height, width in details["cells"]:
            strip = picture[top + height : top + height + 30, left : left + width]
            assert (strip.sum(axis=2) < 250).any()
        step = artifact["details"]["step"]
        assert label["step"] == step
        assert f"epoch {step + 1} (step {step})" in label["text"]
        assert f"{details['correct']}/8 correct" in label["text"]
    # the 8 cells cover the 4 classes although the sample starts with 8 of one, and
    # the mistakes come first
    for label in labels:
        rows = re.findall(r"<tr>\s*<td>(\d+)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>"
                          r"\s*<td>(.*?)</td>", label["text"])
        assert {true for _, _, true, _ in rows} == set(names)
        marks = [mark for _, _, _, mark in rows]
        assert marks == sorted(marks, key=lambda mark: "no" not in mark), marks
