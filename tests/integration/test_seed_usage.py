"""The seed's usage, verbatim, with the three callback plugins and a local Teams webhook."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from cvml_core import TrainInfer
from cvml_core.artifacts.manifest import Manifest
from cvml_core.keras_compat import Callback

pytest.importorskip("cvml_ckpt")
pytest.importorskip("cvml_tb")
pytest.importorskip("cvml_tflite")
sys.path.insert(0, str(Path(__file__).parents[1] / "teams"))
from cvml_ckpt import CkptCallback  # noqa: E402
from cvml_tb import TensorboardCallback  # noqa: E402
from cvml_tflite import TFLiteCallback  # noqa: E402

IMAGE_SHAPE = (8, 8, 3)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.cards.append(json.loads(body))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.cards = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_port}/workflows/run?sig=secret"
    server.shutdown()
    server.server_close()


def image_sets(n_train=64, n_dev=32, seed=0):
    """Random 8x8 RGB images; the class is whether the red channel is brighter than blue."""
    rng = np.random.default_rng(seed)
    x = rng.random((n_train + n_dev, *IMAGE_SHAPE)).astype("float32")
    y = (x[..., 0].mean((1, 2)) > x[..., 2].mean((1, 2))).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x[:n_train], y[:n_train]))
    dev = tf.data.Dataset.from_tensor_slices((x[n_train:], y[n_train:]))
    return train, dev, x[n_train:]


def card_text(card):
    """The card's body as text, once the card is valid against the Adaptive Card schema."""
    from test_teams import assert_valid_card  # the one schema check; needs cvml-teams

    assert_valid_card(card)
    return json.dumps(card["attachments"][0]["content"]["body"])


def test_the_seed_usage_with_all_three_plugins(tmp_path, webhook, capsys, tiny_cnn):
    pytest.importorskip("cvml_teams")  # teams_webhook_url needs the Teams plugin installed
    server, webhook_url = webhook
    train_dataset, dev_dataset, x_dev = image_sets()
    log_dir = str(tmp_path / "run")
    batch_size, epochs, start_epoch = 16, 6, 0
    trainInfer = TrainInfer(tiny_cnn())  # noqa: N806 - the seed's spelling

    basis_dict = {"val_loss": "min"}
    callbacks = [
        CkptCallback(log_dir, basis_dict, skip_from_start=4, frequency=1),
        TensorboardCallback(log_dir, basis_dict, image_shape=(8, 8, 3)),
        TFLiteCallback(log_dir, basis_dict, skip_from_start=4, frequency=5),
    ]
    history = trainInfer.train(train_dataset, dev_dataset, batch_size, epochs,
                               callbacks=callbacks, start_epoch=start_epoch,
                               show_results=1, teams_webhook_url=webhook_url)

    assert history.epoch == list(range(6))
    ckpt, tb, tflite = callbacks
    # Checkpoints only on due epochs 5 and 6; the file holds the best of them.
    best_ckpt = [a for a in ckpt.manifest.artifacts if a["basis_key"] == "val_loss"]
    assert best_ckpt and all(a["epoch"] >= 5 for a in best_ckpt)
    assert (tmp_path / "run" / "ckpt" / "best_val_loss.keras").exists()
    # TensorBoard got the dev sample for its image grid, and wrote event files.
    np.testing.assert_array_equal(tb.sample_data[0], x_dev[:32])
    assert list((tmp_path / "run" / "tb").rglob("events.out.tfevents.*"))
    # TFLite converted on epoch 5 (the only due epoch) and verified the file.
    (converted,) = [a for a in tflite.manifest.artifacts if a["basis_key"] == "val_loss"]
    assert converted["epoch"] == 5 and converted["details"]["verified"]
    assert (tmp_path / "run" / "tflite" / "best_val_loss.tflite").exists()
    # The summary table and the Teams cards name the artifacts.
    out = capsys.readouterr().out
    assert "best_val_loss.keras" in out and "best_val_loss.tflite" in out
    start, end = server.cards
    assert "Training started" in card_text(start)
    assert "best_val_loss.keras" in card_text(end) and "best_val_loss.tflite" in card_text(end)
    assert "secret" not in out


class _WeightsAtStart(Callback):
    def on_train_begin(self, logs=None):
        self.weights = [w.copy() for w in self.model.get_weights()]


def test_resume_at_start_epoch_restores_the_checkpoint_and_keeps_bests(tmp_path, tiny_cnn):
    train_dataset, dev_dataset, _ = image_sets()
    log_dir = str(tmp_path / "run")
    basis_dict = {"val_loss": "min"}

    first = tiny_cnn(seed=0)
    TrainInfer(first).train(
        train_dataset, dev_dataset, 16, 3, show_results=0,
        callbacks=[CkptCallback(log_dir, basis_dict, save_last=True),
                   TensorboardCallback(log_dir, basis_dict)],
    )
    after_3 = first.get_weights()
    best_before = Manifest(tmp_path / "run" / "ckpt", "ckpt").basis_state["best"]["val_loss"]

    probe = _WeightsAtStart()
    resumed_ckpt = CkptCallback(log_dir, basis_dict, save_last=True)
    history = TrainInfer(tiny_cnn(seed=1)).train(
        train_dataset, dev_dataset, 16, 6, start_epoch=3, show_results=0,
        callbacks=[resumed_ckpt, TensorboardCallback(log_dir, basis_dict), probe],
    )
    assert history.epoch == [3, 4, 5]
    for restored, saved in zip(probe.weights, after_3, strict=True):
        np.testing.assert_array_equal(restored, saved)
    best_after = resumed_ckpt.policy.best["val_loss"]
    resumed_losses = dict(zip(history.epoch, history.history["val_loss"], strict=True))
    if min(resumed_losses.values()) < best_before["value"]:
        assert best_after.epoch > 3  # beaten after resume: a newer best
    else:
        assert (best_after.epoch, best_after.value) == (best_before["epoch"], best_before["value"])
    # the best checkpoint file holds the epoch the policy names, read from the file itself
    assert CkptCallback.restore(tiny_cnn(seed=2), log_dir, which="val_loss") == best_after.epoch
    entries = [a for a in resumed_ckpt.manifest.artifacts if a["basis_key"] == "val_loss"]
    assert entries[-1]["epoch"] == best_after.epoch
