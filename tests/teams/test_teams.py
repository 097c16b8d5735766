"""The Teams notifier plugin (cvml-teams), against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import copy
import html
import json
import re
import socket
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import numpy as np
import pytest
from cvml_teams import cards
from cvml_teams import hooks as teams
from cvml_teams import webhook as teams_webhook
from cvml_teams.urls import WebhookURLError
from cvml_teams.webhook import validate_webhook_url
from markdown_it import MarkdownIt

import cvml_core
from cvml_core.plugin_host import loader as plugins
from cvml_core.plugin_host.run_info import RunInfo, mask_url

SECRET = "sig=S3CRET-T0KEN-abcd"
HOST = socket.gethostname()

# The Adaptive Card 1.4 JSON schema, vendored (tests/data/README.md says from where).
# Its AdaptiveCard allows no extra property; Teams documents one, "msteams" (here:
# {"width": "Full"}), which is added to a copy for the validation.
_SCHEMA = json.loads((Path(__file__).parent / "data" / "adaptive-card-1.4.json").read_text())
jsonschema.Draft6Validator.check_schema(_SCHEMA)
_TEAMS_SCHEMA = copy.deepcopy(_SCHEMA)
_TEAMS_SCHEMA["definitions"]["AdaptiveCard"]["properties"]["msteams"] = {
    "type": "object",
    "properties": {"width": {"enum": ["Full"]}},
    "additionalProperties": False,
}
CARD_VALIDATOR = jsonschema.Draft6Validator(_TEAMS_SCHEMA)
STRICT_VALIDATOR = jsonschema.Draft6Validator(_SCHEMA)
# The Workflows webhook's envelope around the card.
MESSAGE_VALIDATOR = jsonschema.Draft6Validator(
    {
        "type": "object",
        "required": ["type", "attachments"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "message"},
            "attachments": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "required": ["contentType", "content"],
                    "additionalProperties": False,
                    "properties": {
                        "contentType": {"const": "application/vnd.microsoft.card.adaptive"},
                        "contentUrl": {"type": "null"},
                        "content": {"type": "object"},
                    },
                },
            },
        },
    }
)


def assert_valid_card(payload):
    """The message envelope, and its card against the Adaptive Card 1.4 schema."""
    MESSAGE_VALIDATOR.validate(payload)
    card = payload["attachments"][0]["content"]
    assert card["version"] == "1.4" and card["type"] == "AdaptiveCard"
    errors = [e.message for e in CARD_VALIDATOR.iter_errors(card)]
    assert errors == [], errors
    without_msteams = {k: v for k, v in card.items() if k != "msteams"}
    assert list(STRICT_VALIDATOR.iter_errors(without_msteams)) == []
    # Teams accepts at most about 28 KB per card.
    assert len(json.dumps(payload).encode()) < 28_000


_MARKDOWN = MarkdownIt("commonmark")


def rendered(markdown, lists=False):
    """What a CommonMark renderer shows for ``markdown``: plain text, no markup.

    Fails when the text would render as emphasis, code, a link, a heading, a quote or
    HTML (only paragraphs, and lists where ``lists``, are allowed).
    """
    out = _MARKDOWN.render(markdown)
    allowed = {"p", "ul", "li"} if lists else {"p"}
    tags = set(re.findall(r"</?([a-z0-9]+)", out))
    assert tags <= allowed, (markdown, out)
    text = html.unescape(re.sub(r"</?[a-z0-9]+>", "\n", out)).replace("\u00a0", " ")
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


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
    for request in server.requests:  # every card a test captures is a valid card
        assert_valid_card(request["json"])


@pytest.fixture
def failing_webhook(request):
    server = _server(request.param)
    yield server
    server.shutdown()
    server.server_close()
    for request in server.requests:
        assert_valid_card(request["json"])


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
    """Every text and fact of the card as it renders, one per line; validates the card."""
    assert_valid_card(payload)
    card = payload["attachments"][0]["content"]
    lines = []
    for element in card["body"]:
        if element["type"] == "TextBlock":
            lines.append(rendered(element["text"], lists=True))
        elif element["type"] == "FactSet":
            lines += [f"{rendered(f['title'])}: {rendered(f['value'])}" for f in element["facts"]]
        elif element["type"] == "Container":  # a code block: one TextBlock per line
            lines += [rendered(item["text"]) for item in element["items"]]
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
    run = RunInfo(notify={"teams": f"https://teams.example.com/a/b?{SECRET}"})
    assert "S3CRET" not in repr(run) and run.masked_notify()["teams"].endswith("…abcd")


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
        cards.start_card(run),
        cards.end_card(run, {"loss": 0.1}),
        cards.failure_card(run, {"loss": 0.1}, error),
    ):
        assert json.loads(json.dumps(payload)) == payload
        assert payload["type"] == "message"
        (attachment,) = payload["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = attachment["content"]
        assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
        assert {e["type"] for e in card["body"]} <= {"TextBlock", "FactSet", "Container"}
    end = card_text(cards.end_card(run, {"loss": 0.1}))
    assert "val_loss (min): 0.125 at epoch 4" in end
    assert "best checkpoint for val_loss (epoch 4): runs/x/ckpt/best.keras" in end
    assert "Duration: 1m 15s" in end
    failure = card_text(cards.failure_card(run, {}, error))
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
    monkeypatch.setenv(teams_webhook.ENV_ATTEMPTS, "2")
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
    monkeypatch.setenv(teams_webhook.ENV_TIMEOUT, "0.5")
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


def test_the_notifier_is_an_installed_plugin_without_tensorflow():
    registry = plugins.get_registry()
    assert dict(registry.pm.list_name_plugin())["cvml-teams:teams"] is teams.plugin
    import subprocess
    import sys

    code = (
        "import sys, cvml_teams.hooks, cvml_teams.cards, cvml_teams.webhook, cvml_teams.urls, "
        "cvml_core.plugin_host.run_info, cvml_core.artifacts.worker; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_chief_posts(webhook):
    run = RunInfo(notify={"teams": webhook.url}, chief=False, epochs=1)
    teams.plugin.cvml_train_begin(run)
    run.end_time = run.start_time + 1
    teams.plugin.cvml_train_end(run, {}, None)
    assert webhook.requests == []
    chief = RunInfo(notify={"teams": webhook.url}, epochs=1)
    teams.plugin.cvml_train_begin(chief)
    chief.end_time = chief.start_time + 1
    teams.plugin.cvml_train_end(chief, {"loss": 0.5}, None)
    assert [card_text(r["json"]).splitlines()[0] for r in webhook.requests] == [
        "Training started", "Training finished"
    ]


# -- what the cards say ----------------------------------------------------------------


def _error(message="NaN loss"):
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc


def _finished(run):
    run.end_time = run.start_time + 5
    run.epochs_done = run.epochs
    return run


def test_every_card_names_the_run_and_the_host():
    run = _finished(RunInfo(log_dir="runs/exp-7", epochs=2, model_name="tiny"))
    assert run.host == HOST and run.run_name == "exp-7"
    for payload in (cards.start_card(run), cards.end_card(run, {}),
                    cards.failure_card(run, {}, _error())):
        text = card_text(payload)
        assert "Run: exp-7" in text and f"Host: {HOST}" in text and "Model: tiny" in text
    assert RunInfo(model_name="tiny").run_name == "tiny" and RunInfo().run_name == "run"


def test_text_from_the_run_shows_as_it_is():
    """Markdown characters in paths, names and errors are escaped: no bold, no code."""
    log_dir = "runs/__cache__/`exp`_*1*/~tmp~/[a](b)"
    run = _finished(RunInfo(log_dir=log_dir, epochs=2, model_name="net_<v2>",
                            basis_dict={"val__loss__": "min"}, callbacks=["__ckpt__"]))
    run.best = {"val__loss__": {"value": 0.5, "epoch": 2}}
    path = f"{log_dir}/ckpt/__best__ #1.keras"
    run.artifacts = [cvml_core.Artifact("checkpoint", path, 2, {}, "val__loss__", "ckpt")]
    message = "bad `x` in __init__.py: **not bold** & <b>not html</b>\n- not a list"
    texts = [card_text(cards.start_card(run)), card_text(cards.end_card(run, {"__m__": 1})),
             card_text(cards.failure_card(run, {}, _error(message)))]
    for text in texts:
        assert f"Log dir: {log_dir}" in text and "Model: net_<v2>" in text
    start, end, failure = texts
    assert "Basis: val__loss__ (min)" in start and "Callbacks: __ckpt__" in start
    assert f"best checkpoint for val__loss__ (epoch 2): {path}" in end
    assert "__m__: 1" in end and "val__loss__ (min): 0.5 at epoch 2" in end
    assert "Error: ValueError: bad `x` in __init__.py: **not bold** & <b>not html</b>" in failure
    assert "- not a list" in failure  # the message's second line, in the traceback
    assert "`" not in json.dumps(cards.end_card(run, {})).replace("\\\\`", "")


def test_escaping_round_trips_through_a_commonmark_renderer():
    nasty = [
        "__cache__", "a*b*c", "**x**", "_x_", "`code`", "~~x~~", "[t](u)", "<b>", "&amp;",
        "# h", "> q", "- item", "+ item", "1. one", "2) two", "---", "===", "-", "C:\\runs\\",
        "a\\_b", "x\\", "best_val_loss.keras", "snake_case", "-0.5",
    ]
    for text in nasty:
        assert rendered(cards.md_escape(text)) == text, text
    # Names with inner underscores are left alone (CommonMark never emphasises them).
    assert cards.md_escape("best_val_loss.keras") == "best_val_loss.keras"
    # Lines: blank-line separated (Teams shows a single newline as a space), indented
    # with no-break spaces (leading spaces would start a code block).
    assert cards.md_escape("a\n    b") == "a\n\n\u00a0\u00a0\u00a0\u00a0b"


@pytest.mark.parametrize(
    ("start", "restored", "by", "expected"),
    [
        (0, None, "", None),
        (2, 2, "ckpt", "after epoch 2: the weights of epoch 2 restored by ckpt"),
        (3, 2, "ckpt", "after epoch 3, from the weights of epoch 2 (the latest checkpoint "
                       "up to epoch 3), restored by ckpt"),
        (2, 0, "no checkpoint up to epoch 2 was found by ['ckpt']",
         "after epoch 2, but nothing was restored (no checkpoint up to epoch 2 was found by "
         "['ckpt']): training went on from the model's current weights"),
        (2, None, "", "after epoch 2 (start_epoch=2; what was restored is not known)"),
    ],
)
def test_the_start_card_tells_what_a_resume_restored(start, restored, by, expected):
    run = RunInfo(epochs=5, start_epoch=start, restored_epoch=restored, restored_by=by)
    text = card_text(cards.start_card(run))
    assert f"Epochs: {start + 1} to 5" in text
    if expected is None:
        assert "Resumed" not in text
    else:
        assert f"Resumed: {expected}" in text


class RestoringNote(NoteCallback):
    """Says it restored the weights of the epoch before ``max_epoch``."""

    def restore_latest(self, model=None, max_epoch=None):
        return max_epoch - 1


@pytest.mark.parametrize("restoring", [False, True])
def test_a_resumed_run_says_what_was_restored(tmp_path, tiny_model, webhook, restoring):
    trainset, dev = make_sets()
    note = (RestoringNote if restoring else NoteCallback)(tmp_path, {"val_loss": "min"})
    ti = cvml_core.TrainInfer(tiny_model(), log_dir=tmp_path)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ti.train(trainset, dev, 16, 3, callbacks=[note], start_epoch=2, show_results=0,
                 teams_webhook_url=webhook.url)
    start = card_text(webhook.requests[0]["json"])
    assert "Epochs: 3 to 3" in start
    if restoring:
        assert ti.run.restored_epoch == 1 and ti.run.restored_by == "note"
        assert ("Resumed: after epoch 2, from the weights of epoch 1 (the latest checkpoint "
                "up to epoch 2), restored by note") in start
    else:
        assert ti.run.restored_epoch == 0
        assert ("Resumed: after epoch 2, but nothing was restored (no callback can restore "
                "weights (add the 'ckpt' callback)): training went on from the model's "
                "current weights") in start


def _deep(depth, message="deep failure"):
    """Raises ``depth`` frames down; alternating frames (Python folds repeated ones)."""
    if depth == 0:
        raise KeyError(message)
    _deep_too(depth - 1, message)


def _deep_too(depth, message):
    padding = "x" * 150  # a long source line: frames are big  # noqa: F841
    _deep(depth, message)


def _raised(function, *args):
    try:
        function(*args)
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


def test_a_long_traceback_keeps_whole_frames_within_the_limit():
    error = _raised(_deep, 60)
    text = cards.traceback_text(error, limit=1500)
    lines = text.splitlines()
    assert lines[0].startswith("… the first ") and "not shown (card size limit)" in lines[0]
    assert len(text) <= 1500 + len(lines[0]) + 1
    assert lines[-1] == "KeyError: 'deep failure'"
    # Whole frames only: after the note, every frame's "File" line and its source line.
    assert lines[1].startswith('  File "') and "in _deep" in lines[1]
    assert "repeated" not in text
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    for i in frames:
        assert lines[i + 1].startswith("    ")
    assert 'raise KeyError(message)' in text
    # The full traceback, when it fits, is all there.
    small = _raised(_deep, 2)
    full = cards.traceback_text(small)
    assert full.startswith("Traceback (most recent call last):") and full.count("in _deep\n") == 3


def test_a_huge_error_message_is_cut_and_chained_errors_are_kept():
    huge = cards.traceback_text(_raised(_deep, 1, "m" * 10_000), limit=800)
    assert len(huge) <= 1000 and huge.rstrip().endswith("…")
    try:
        try:
            raise OSError("disk __full__")
        except OSError as inner:
            raise RuntimeError("save failed") from inner
    except RuntimeError as exc:
        chained = cards.traceback_text(exc)
    assert "OSError: disk __full__" in chained and chained.endswith("RuntimeError: save failed")
    card = cards.failure_card(_finished(RunInfo(epochs=1)), {}, _raised(_deep, 200))
    text = card_text(card)  # a valid card, under Teams' size limit, whatever the depth
    assert "KeyError: 'deep failure'" in text and "not shown (card size limit)" in text


def test_artifacts_read_as_a_person_would_say_them():
    run = _finished(RunInfo(log_dir="runs/x", epochs=8, basis_dict={"val_loss": "min"}))
    art = cvml_core.Artifact
    run.artifacts = [
        art("checkpoint", "runs/x/ckpt/best_val_loss.keras", 7, {}, "val_loss", "ckpt",
            {"role": "best"}),
        art("checkpoint", "runs/x/ckpt/last.keras", 8, {}, None, "ckpt", {"role": "last"}),
        art("tflite", "runs/x/tflite/best_val_loss.tflite", 7, {}, "val_loss", "tflite"),
        art("tflite", "runs/x/tflite/final.tflite", 8, {}, None, "tflite"),
        art("tensorboard-images", "runs/x/tb/validation", 1, {}, None, "tb",
            {"logdir": "runs/x/tb"}),
        art("tensorboard-images", "runs/x/tb/validation", 7, {}, "val_loss", "tb",
            {"logdir": "runs/x/tb"}),
        art("weights", "runs/x/mine/best_val_loss.npz", 7, {}, "val_loss", "mine"),
    ]
    block = card_text(cards.end_card(run, {})).split("Artifacts\n", 1)[1].splitlines()
    assert block == [
        "best checkpoint for val_loss (epoch 7): runs/x/ckpt/best_val_loss.keras",
        "last checkpoint (epoch 8): runs/x/ckpt/last.keras",
        "best TFLite model for val_loss (epoch 7): runs/x/tflite/best_val_loss.tflite",
        "TFLite model (epoch 8): runs/x/tflite/final.tflite",
        "TensorBoard: tensorboard --logdir runs/x/tb",  # once, though two artifacts
        "best weights for val_loss (epoch 7): runs/x/mine/best_val_loss.npz",
    ]
    failure = card_text(cards.failure_card(run, {}, _error()))
    assert "TensorBoard: tensorboard --logdir runs/x/tb" in failure


def test_a_traceback_is_compact_and_monospaced():
    def _inner():
        raise ValueError("bad __init__ `x`\n    indented second line")

    error = _raised(_inner)
    text = cards.traceback_text(error)
    card = cards.failure_card(_finished(RunInfo(epochs=2)), {}, error)
    card_text(card)  # a valid card, every line plain text
    body = card["attachments"][0]["content"]["body"]
    (block,) = [e for e in body if e["type"] == "Container"]
    items = block["items"]
    # one TextBlock per line, none with a blank line inside (Teams showed one between
    # every two lines), no spacing between them, monospaced
    assert len(items) == len(text.splitlines())
    assert all("\n" not in item["text"] for item in items)
    assert {(i["fontType"], i["spacing"], i["type"]) for i in items} == {
        ("Monospace", "None", "TextBlock")
    }
    # each line renders (CommonMark) exactly as the traceback's line, indentation kept
    shown = [rendered(item["text"]).replace("\u00a0", " ") for item in items]
    expected = [line.strip() or "" for line in text.splitlines()]
    assert [line.strip() for line in shown] == [line for line in expected]
    leading = [len(i["text"]) - len(i["text"].lstrip("\u00a0")) for i in items]
    assert leading == [len(line) - len(line.lstrip(" ")) for line in text.splitlines()]
    assert text.splitlines()[0] == "Traceback (most recent call last):"
    assert "ValueError: bad __init__ `x`" in shown
