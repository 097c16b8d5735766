"""The built-in Teams notifier, against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
import pytest

import cvml_core
from cvml_core import plugins, teams
from cvml_core.run import RunInfo, mask_url
from cvml_core.teams import WebhookURLError, validate_webhook_url

SECRET = "sig=S3CRET-T0KEN-abcd"


class NoteCallback(cvml_core.BasisCallback):
    """Writes ``best_<key>.txt`` on each improvement."""

    name = "note"

    def on_improved(self, epoch, improved_keys, logs):
        for key in improved_keys:
            path = self.folder / f"best_{key}.txt"
            cvml_core.atomic_write_text(path, f"{epoch} {logs[key]}")
            self.record([self.artifact("note", path, epoch, logs, key)])


class FailAt(cvml_core.keras_compat.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("bad batch in epoch 2")


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append(
            {"path": self.path, "content_type": self.headers.get("Content-Type"),
             "json": json.loads(body)}
        )
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _server(status):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []
    server.status = status
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}/workflows/abc/triggers/manual?{SECRET}"
    return server


@pytest.fixture
def webhook():
    """A webhook answering 202 Accepted, as Teams Workflows does; records every request."""
    server = _server(202)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def failing_webhook(request):
    server = _server(request.param)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_webhook():
    """Accepts TCP connections (into the backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook?{SECRET}"
    sock.close()


def make_sets(n_train=48, n_dev=24):
    rng = np.random.default_rng(0)
    x = rng.random((n_train + n_dev, 8)).astype("float32")
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype("int32")
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def train(tmp_path, tiny_model, url, epochs=2, extra=()):
    trainset, dev = make_sets()
    callbacks = [NoteCallback(tmp_path, {"val_loss": "min"}), *extra]
    ti = cvml_core.TrainInfer(tiny_model(), log_dir=tmp_path)
    return ti.train(trainset, dev, 16, epochs, callbacks=callbacks, show_results=0,
                    teams_webhook_url=url)


def card_text(payload):
    """Every text and fact of the card, one per line."""
    card = payload["attachments"][0]["content"]
    lines = []
    for element in card["body"]:
        if element["type"] == "TextBlock":
            lines.append(element["text"])
        elif element["type"] == "FactSet":
            lines += [f"{f['title']}: {f['value']}" for f in element["facts"]]
    return "\n".join(lines)


def teams_warnings(caught):
    return [w for w in caught if "Teams notification" in str(w.message)]


# -- URL rules and masking -------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://prod-00.westeurope.logic.azure.com/workflows/x/triggers/manual?sig=abc",
        "http://localhost:8080/hook",
        "http://127.0.0.1/hook",
        "http://[::1]:9000/hook",
    ],
)
def test_allowed_urls(url):
    assert validate_webhook_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        f"http://example.com/hook?{SECRET}",
        f"http://10.0.0.5/hook?{SECRET}",
        f"ftp://example.com/hook?{SECRET}",
        f"https:///no-host?{SECRET}",
        f"example.com/hook?{SECRET}",
        f"https://example.com:99999/hook?{SECRET}",
    ],
)
def test_rejected_urls_name_the_rule_and_hide_the_secret(url):
    with pytest.raises(WebhookURLError, match="teams_webhook_url") as raised:
        validate_webhook_url(url)
    assert "S3CRET" not in str(raised.value)


def test_no_url_means_no_notifications():
    assert validate_webhook_url(None) is None
    assert validate_webhook_url("  ") is None
    with pytest.raises(WebhookURLError, match="type int"):
        validate_webhook_url(42)


def test_mask_url_keeps_scheme_host_and_last_4_characters():
    assert mask_url(f"https://teams.example.com/a/b?{SECRET}") == "https://teams.example.com/…abcd"
    run = RunInfo(webhook_url=f"https://teams.example.com/a/b?{SECRET}")
    assert "S3CRET" not in repr(run) and run.masked_webhook_url.endswith("…abcd")


def test_cards_are_adaptive_card_messages():
    run = RunInfo(log_dir="runs/x", epochs=5, basis_dict={"val_loss": "min"}, callbacks=["ckpt"])
    run.end_time = run.start_time + 75
    run.epochs_done = 5
    run.best = {"val_loss": {"value": 0.125, "epoch": 4}}
    run.artifacts = [cvml_core.Artifact("checkpoint", "runs/x/ckpt/best.keras", 4, {}, "val_loss",
                                        "ckpt")]
    try:
        raise ValueError("NaN loss")
    except ValueError as exc:
        error = exc
    for payload in (
        teams.start_card(run),
        teams.end_card(run, {"loss": 0.1}),
        teams.failure_card(run, {"loss": 0.1}, error),
    ):
        assert json.loads(json.dumps(payload)) == payload
        assert payload["type"] == "message"
        (attachment,) = payload["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = attachment["content"]
        assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
        assert {e["type"] for e in card["body"]} <= {"TextBlock", "FactSet"}
    end = card_text(teams.end_card(run, {"loss": 0.1}))
    assert "val_loss (min): 0.125 at epoch 4" in end and "runs/x/ckpt/best.keras" in end
    assert "Duration: 1m 15s" in end
    failure = card_text(teams.failure_card(run, {}, error))
    assert "ValueError: NaN loss" in failure and "Traceback" in failure


# -- a real webhook --------------------------------------------------------------------


def test_start_and_end_cards_reach_the_webhook(tmp_path, tiny_model, webhook, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train(tmp_path, tiny_model, webhook.url)
    assert teams_warnings(caught) == []
    start, end = webhook.requests
    parts = urlsplit(webhook.url)
    assert start["path"] == end["path"] == f"{parts.path}?{parts.query}"
    assert start["content_type"] == "application/json"
    assert "Training started" in card_text(start["json"])
    text = card_text(end["json"])
    assert "Training finished" in text and "Epochs: 2 of 2" in text
    best = min(history.history["val_loss"])
    assert f"val_loss (min): {best:.4g}" in text
    assert str(tmp_path / "note" / "best_val_loss.txt") in text
    out = capsys.readouterr()
    assert "S3CRET" not in out.out + out.err


def test_a_failure_card_carries_the_error(tmp_path, tiny_model, webhook):
    with pytest.raises(RuntimeError, match="bad batch"):
        train(tmp_path, tiny_model, webhook.url, epochs=3, extra=[FailAt()])
    start, failure = webhook.requests
    text = card_text(failure["json"])
    assert "Training failed" in text
    assert "RuntimeError: bad batch in epoch 2" in text and "Traceback" in text
    assert "Epochs done: 2 of 3" in text  # epoch 2 ended; a callback raised at its end


@pytest.mark.parametrize("failing_webhook", [500], indirect=True)
def test_a_webhook_answering_500_is_retried_and_warns_once(
    tmp_path, tiny_model, failing_webhook, monkeypatch
):
    monkeypatch.setenv(teams.ENV_ATTEMPTS, "2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train(tmp_path, tiny_model, failing_webhook.url)
    assert history.epoch == [0, 1]
    (warning,) = teams_warnings(caught)
    assert "HTTP 500" in str(warning.message) and "S3CRET" not in str(warning.message)
    # Start card and end card, two attempts each.
    assert len(failing_webhook.requests) == 4
    assert "Training finished" in card_text(failing_webhook.requests[-1]["json"])


@pytest.mark.parametrize("failing_webhook", [404], indirect=True)
def test_a_webhook_answering_404_is_not_retried(tmp_path, tiny_model, failing_webhook):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tmp_path, tiny_model, failing_webhook.url)
    (warning,) = teams_warnings(caught)
    assert "HTTP 404" in str(warning.message)
    # The start card failed for good: the end card is not sent.
    assert len(failing_webhook.requests) == 1


def test_a_webhook_that_never_answers_costs_one_warning(
    tmp_path, tiny_model, silent_webhook, monkeypatch
):
    monkeypatch.setenv(teams.ENV_TIMEOUT, "0.5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train(tmp_path, tiny_model, silent_webhook)
    assert history.epoch == [0, 1]
    (warning,) = teams_warnings(caught)
    message = str(warning.message)
    assert "S3CRET" not in message and mask_url(silent_webhook) in message


def test_a_bad_url_fails_at_train_start(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="https") as raised:
        train(tmp_path, tiny_model, f"http://teams.example.com/hook?{SECRET}")
    assert "S3CRET" not in str(raised.value)
    assert not (tmp_path / "note" / "best_val_loss.txt").exists()


def test_the_notifier_is_a_builtin_plugin_without_tensorflow():
    registry = plugins.get_registry()
    assert "cvml-core:cvml_core.teams" in dict(registry.pm.list_name_plugin())
    import subprocess
    import sys

    code = (
        "import sys, cvml_core.teams, cvml_core.run; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_chief_posts(webhook):
    run = RunInfo(webhook_url=webhook.url, chief=False, epochs=1)
    teams.cvml_train_begin(run)
    run.end_time = run.start_time + 1
    teams.cvml_train_end(run, {}, None)
    assert webhook.requests == []
    chief = RunInfo(webhook_url=webhook.url, epochs=1)
    teams.cvml_train_begin(chief)
    chief.end_time = chief.start_time + 1
    teams.cvml_train_end(chief, {"loss": 0.5}, None)
    assert [card_text(r["json"]).splitlines()[0] for r in webhook.requests] == [
        "Training started", "Training finished"
    ]
