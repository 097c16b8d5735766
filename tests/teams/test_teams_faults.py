"""The Teams notifier under faults: bad settings, bad URLs, and webhooks that misbehave.

Every server runs on 127.0.0.1 on a free port: ``http.server`` where it can produce the
fault, a raw socket server where it cannot (a cut or malformed answer). Every wait has
a deadline (socket timeouts, short notifier timeouts passed explicitly, bounded joins),
and no test asserts on a duration.
"""

from __future__ import annotations

import email.utils
import json
import logging
import socket
import struct
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from cvml_teams import cards as teams_cards
from cvml_teams import hooks as teams
from cvml_teams import webhook as teams_webhook
from cvml_teams.hooks import TeamsNotifier, WebhookURLError, validate_webhook_url

import cvml_core
from cvml_core.keras_compat import Callback
from cvml_core.plugin_host.run_info import RunInfo, mask_url

sys.path.insert(0, str(Path(__file__).parent))
from test_teams import assert_valid_card  # noqa: E402 - the one Adaptive Card schema check

SECRET_PATH = "S3CRET-PATH-9f8e"
SECRET = "sig=S3CRET-T0KEN-abcd"
DEADLINE = 10.0  # the most any test waits for a thread or a socket


def _url(port, path=f"/workflows/{SECRET_PATH}/triggers/manual"):
    return f"http://127.0.0.1:{port}{path}?{SECRET}"


def _card(title="Training started"):
    return teams_cards.adaptive_card_message([{"type": "TextBlock", "text": title, "wrap": True}])


def _leaks(*texts):
    return [t for t in texts if "S3CRET" in str(t)]


def teams_warnings(caught):
    return [w for w in caught if "Teams notification" in str(w.message)]


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions that ended a thread (the notifier's must never end that way)."""
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


# -- servers ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Answers with the server's next planned (status, headers), then its last one."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", 0))
        self.server.requests.append(json.loads(self.rfile.read(length)))
        plan = self.server.plan
        status, headers = plan.pop(0) if len(plan) > 1 else plan[0]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # noqa: N802 - a followed redirect would arrive here
        self.server.gets += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_webhook():
    """A real HTTP server; ``server.plan`` is the list of answers, last one repeated.
    Every card it received is checked against the Adaptive Card schema at the end."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests, server.gets, server.plan = [], 0, [(202, {})]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = _url(server.server_port)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(DEADLINE)
    for payload in server.requests:
        assert_valid_card(payload)


class RawServer:
    """A socket server that reads each request whole, then answers with ``respond(conn)``."""

    def __init__(self, respond):
        self.respond = respond
        self.requests = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.url = _url(self._sock.getsockname()[1])

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(DEADLINE)
                try:
                    self._read_request(conn)
                    self.requests += 1
                    self.respond(conn)
                except OSError:
                    pass

    @staticmethod
    def _read_request(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("client went away")
            body += chunk

    def close(self):
        self._stop.set()
        self._thread.join(DEADLINE)
        self._sock.close()


def _bad_status_line(conn):
    conn.sendall(b"HTTP/1.1 2")  # the connection drops mid status line


def _reset_mid_response(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST


def _chunked_cut(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\nonly part")


def _closed_without_answer(conn):
    pass


@pytest.fixture
def raw_webhook(request):
    server = RawServer(request.param)
    yield server
    server.close()


@pytest.fixture
def silent_webhook():
    """Accepts TCP connections (into the backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield _url(sock.getsockname()[1])
    sock.close()


def _deliver(url, cards=2, **kwargs):
    """Post ``cards`` cards through a notifier and close it: (notifier, close(), warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notifier = TeamsNotifier(url, **kwargs)
        for i in range(cards):
            notifier.post(_card(f"card {i}"))
        ok = notifier.close(wait=DEADLINE)
    assert not notifier.busy
    return notifier, ok, teams_warnings(caught)


# -- webhook faults --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_webhook", "reason"),
    [
        (_bad_status_line, "BadStatusLine"),
        (_reset_mid_response, ""),  # IncompleteRead or ConnectionResetError, by timing
        (_chunked_cut, "IncompleteRead"),
        (_closed_without_answer, "RemoteDisconnected"),
    ],
    indirect=["raw_webhook"],
    ids=["bad-status-line", "reset-mid-response", "chunked-body-cut", "closed-no-answer"],
)
def test_a_broken_answer_is_a_counted_failure_and_the_thread_lives_on(
    raw_webhook, reason, thread_errors
):
    notifier, ok, caught = _deliver(raw_webhook.url, timeout=5, attempts=2)
    assert thread_errors == []
    assert ok is False and notifier.sent == 0 and notifier.failed == 2
    assert raw_webhook.requests == 4  # both cards, two attempts each: the thread lived on
    (warning,) = caught
    message = str(warning.message)
    assert reason in message and notifier.masked_url in message and "after 2 attempt(s)" in message
    assert _leaks(message, notifier.last_error) == []


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_retried_then_counted(http_webhook, status, thread_errors):
    http_webhook.plan = [(status, {})]
    notifier, ok, caught = _deliver(http_webhook.url, timeout=5, attempts=2)
    assert ok is False and notifier.failed == 2 and len(http_webhook.requests) == 4
    assert notifier.pauses == [teams_webhook.BACKOFF, teams_webhook.BACKOFF]
    (warning,) = caught
    assert f"HTTP {status}" in str(warning.message) and _leaks(str(warning.message)) == []
    assert thread_errors == []


def test_a_webhook_that_never_answers_is_bounded_by_the_timeout(silent_webhook, thread_errors):
    notifier, ok, caught = _deliver(silent_webhook, cards=1, timeout=0.5, attempts=3)
    assert ok is False and notifier.failed == 1
    (warning,) = caught
    assert "TimeoutError" in str(warning.message) and _leaks(str(warning.message)) == []
    assert thread_errors == []


def test_retry_after_is_honoured_within_the_budget(http_webhook):
    http_webhook.plan = [(429, {"Retry-After": "1"}), (202, {})]
    notifier, ok, caught = _deliver(http_webhook.url, cards=1, timeout=5, attempts=3)
    assert ok is True and caught == [] and notifier.sent == 1
    assert notifier.pauses == [1.0]  # the server's pause, not the 0.5 s backoff
    assert len(http_webhook.requests) == 2


def test_retry_after_beyond_the_budget_stops_that_card(http_webhook):
    http_webhook.plan = [(429, {"Retry-After": "120"}), (202, {})]
    notifier, ok, caught = _deliver(http_webhook.url, cards=2, timeout=2, attempts=3)
    # The first card gives up at once; the second goes through (429 is not a wrong URL).
    assert ok is False and notifier.failed == 1 and notifier.sent == 1
    assert notifier.pauses == [] and len(http_webhook.requests) == 2
    (warning,) = caught
    assert "HTTP 429" in str(warning.message) and "Retry-After 120 s is beyond" in str(
        warning.message
    )


def test_retry_after_forms():
    assert teams_webhook.retry_after({"Retry-After": "7"}) == 7.0
    soon = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 0.0 <= teams_webhook.retry_after({"Retry-After": soon}) <= 4.0
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert teams_webhook.retry_after({"Retry-After": past}) == 0.0
    for junk in ("", "soon", "-3", "1.5"):
        assert teams_webhook.retry_after({"Retry-After": junk}) is None
    assert teams_webhook.retry_after({}) is None


def test_a_redirect_is_not_followed(http_webhook):
    http_webhook.plan = [(302, {"Location": "/elsewhere"})]
    notifier, ok, caught = _deliver(http_webhook.url, cards=2, timeout=5, attempts=3)
    assert ok is False and notifier.failed == 1 and notifier.skipped == 1
    assert len(http_webhook.requests) == 1 and http_webhook.gets == 0
    (warning,) = caught
    assert "HTTP 302" in str(warning.message)


def test_any_exception_while_posting_is_caught_and_never_printed(http_webhook, thread_errors):
    """An exception whose text quotes the URL: counted, reported by its type only."""
    notifier = TeamsNotifier(http_webhook.url, timeout=5, attempts=3)

    def explode(data, timeout):
        raise RuntimeError(f"cannot post to {http_webhook.url} ({SECRET_PATH})")

    notifier._post_once = explode
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notifier.post(_card())
        notifier.post({"not json": object()})
        ok = notifier.close(wait=DEADLINE)
    assert ok is False and notifier.failed == 1 and notifier.skipped == 1
    (warning,) = teams_warnings(caught)
    assert "RuntimeError" in str(warning.message)
    assert _leaks(str(warning.message), notifier.last_error) == []
    assert thread_errors == []


def test_a_card_that_is_not_json_does_not_stop_the_next(http_webhook):
    notifier = TeamsNotifier(http_webhook.url, timeout=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notifier.post({"bad": float("nan")})
        notifier.post(_card())
        ok = notifier.close(wait=DEADLINE)
    assert ok is False and notifier.failed == 1 and notifier.sent == 1
    assert "not valid JSON" in str(teams_warnings(caught)[0].message)


# -- URL and settings validation -------------------------------------------------------

HOSTED = "https://prod-00.westeurope.logic.azure.com"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"{HOSTED}/workflows/{SECRET_PATH}\x01/x?{SECRET}", "control character, U+0001"),
        (f"{HOSTED}/workflows/{SECRET_PATH}\x7f?{SECRET}", "control character, U+007F"),
        (f"{HOSTED}/workflows/{SECRET_PATH}\n/x?{SECRET}", "control character, U+000A"),
        (f"{HOSTED}/workflows/{SECRET_PATH} x?{SECRET}", "a space"),
        (f"{HOSTED}/workflows/{SECRET_PATH}\tx?{SECRET}", "control character, U+0009"),
        (f"{HOSTED}/workflows/{SECRET_PATH}\u00e9?{SECRET}", "non-ASCII character"),
        (f"{HOSTED}/workflows/{SECRET_PATH}\u00a0?{SECRET}", "a space character, U+00A0"),
        (f"https://user:{SECRET_PATH}@prod-00.logic.azure.com/w?{SECRET}", "credentials"),
        (f"https://{SECRET_PATH}@prod-00.logic.azure.com/w?{SECRET}", "credentials"),
        (f"{HOSTED}/workflows/{SECRET_PATH}?{SECRET}#frag", "#fragment"),
        (f"https://[::1/workflows/{SECRET_PATH}?{SECRET}", "cannot be parsed"),
        (f"https://host:99999/workflows/{SECRET_PATH}?{SECRET}", "cannot be parsed"),
        (f"http://example.com/workflows/{SECRET_PATH}?{SECRET}", "must use https://"),
        (f"ftp://example.com/workflows/{SECRET_PATH}?{SECRET}", "https:// URL with a host"),
    ],
)
def test_bad_urls_are_refused_with_the_secret_masked(url, problem):
    for attempt in (lambda: validate_webhook_url(url), lambda: TeamsNotifier(url)):
        with pytest.raises(WebhookURLError) as raised:
            attempt()
        message = str(raised.value)
        assert problem in message and "teams_webhook_url" in message and "allowed:" in message
        assert mask_url(url) in message or repr(mask_url(url)) in message
        assert _leaks(message) == []


def test_surrounding_spaces_of_a_pasted_url_are_dropped():
    url = f"{HOSTED}/workflows/x?{SECRET}"
    assert validate_webhook_url(f"  {url}\n") == url


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"attempts": 0}, "attempts"),
        ({"attempts": -2}, "attempts"),
        ({"attempts": 1.5}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"attempts": "3"}, "attempts"),
    ],
)
def test_bad_notifier_arguments_are_refused(kwargs, name):
    ((key, value),) = kwargs.items()
    with pytest.raises(ValueError, match=name) as raised:
        TeamsNotifier(f"{HOSTED}/workflows/x?{SECRET}", **kwargs)
    assert f"Received: {name}={value!r}" in str(raised.value)
    assert _leaks(str(raised.value)) == []


@pytest.mark.parametrize(
    ("var", "value"),
    [
        (teams_webhook.ENV_TIMEOUT, "-1"),
        (teams_webhook.ENV_TIMEOUT, "0"),
        (teams_webhook.ENV_TIMEOUT, "ten"),
        (teams_webhook.ENV_TIMEOUT, "nan"),
        (teams_webhook.ENV_TIMEOUT, "inf"),
        (teams_webhook.ENV_ATTEMPTS, "0"),
        (teams_webhook.ENV_ATTEMPTS, "2.5"),
        (teams_webhook.ENV_ATTEMPTS, "-1"),
        (teams_webhook.ENV_ATTEMPTS, "three"),
    ],
)
def test_bad_settings_are_refused_where_the_url_is_checked(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    url = f"{HOSTED}/workflows/x?{SECRET}"
    with pytest.raises(ValueError, match=var) as raised:
        validate_webhook_url(url)
    assert f"Received: {var}={value!r}" in str(raised.value)
    with pytest.raises(ValueError, match=var):
        TeamsNotifier(url)
    assert validate_webhook_url(None) is None  # without a URL, the settings do not matter
    # Arguments given to the notifier replace the settings.
    TeamsNotifier(url, timeout=1, attempts=1).close(wait=DEADLINE)


def test_good_settings_are_used(monkeypatch):
    monkeypatch.setenv(teams_webhook.ENV_TIMEOUT, "2.5")
    monkeypatch.setenv(teams_webhook.ENV_ATTEMPTS, " 4 ")
    notifier = TeamsNotifier(f"{HOSTED}/workflows/x?{SECRET}")
    assert (notifier.timeout, notifier.attempts) == (2.5, 4)
    assert notifier.close(wait=DEADLINE) is True


# -- through TrainInfer ------------------------------------------------------------------


def _train(tmp_path, tiny_model, url, epochs=3, callbacks=None):
    rng = np.random.default_rng(0)
    x = rng.random((48, 8)).astype("float32")
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype("int32")
    ti = cvml_core.TrainInfer(tiny_model(), log_dir=tmp_path, basis_dict={"val_loss": "min"})
    return ti.train((x[:32], y[:32]), (x[32:], y[32:]), 16, epochs, show_results=0,
                    teams_webhook_url=url, callbacks=callbacks)


class _Batches(Callback):
    """Counts the batches trained: 0 means the run was refused before training."""

    count = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.count += 1


@pytest.mark.parametrize("raw_webhook", [_bad_status_line], indirect=True)
def test_training_under_a_broken_webhook_finishes_with_one_warning(
    tmp_path, tiny_model, raw_webhook, monkeypatch, capsys, caplog, thread_errors
):
    monkeypatch.setenv(teams_webhook.ENV_TIMEOUT, "5")
    monkeypatch.setenv(teams_webhook.ENV_ATTEMPTS, "1")
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _train(tmp_path, tiny_model, raw_webhook.url)
    assert history.epoch == [0, 1, 2]
    assert raw_webhook.requests == 2  # the start card and the end card were both tried
    (warning,) = teams_warnings(caught)
    assert "BadStatusLine" in str(warning.message)
    out = capsys.readouterr()
    assert _leaks(out.out, out.err, caplog.text, *(str(w.message) for w in caught)) == []
    assert thread_errors == []


def test_a_url_with_a_control_character_fails_before_training(tmp_path, tiny_model):
    url = f"{HOSTED}/workflows/{SECRET_PATH}\x01/x?{SECRET}"
    batches = _Batches()
    with pytest.raises(WebhookURLError, match="control character") as raised:
        _train(tmp_path, tiny_model, url, callbacks=[batches])
    assert _leaks(str(raised.value)) == []
    assert batches.count == 0


def test_a_bad_setting_fails_before_training(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv(teams_webhook.ENV_ATTEMPTS, "0")
    batches = _Batches()
    with pytest.raises(ValueError, match=teams_webhook.ENV_ATTEMPTS):
        _train(tmp_path, tiny_model, f"{HOSTED}/workflows/x?{SECRET}", callbacks=[batches])
    assert batches.count == 0


def test_the_hooks_post_nothing_for_a_run_without_url():
    run = RunInfo(epochs=1)
    teams.plugin.cvml_train_begin(run)
    teams.plugin.cvml_train_end(run, {}, None)
    assert teams.plugin.runs == []


# -- the plugin object and the shared worker ---------------------------------------------


def test_cards_are_posted_on_the_shared_worker_in_order(http_webhook):
    notifier = TeamsNotifier(http_webhook.url, timeout=5)
    threads = []
    post_once = notifier._post_once

    def recording(data, timeout):
        threads.append(threading.current_thread().name)
        return post_once(data, timeout)

    notifier._post_once = recording
    for i in range(3):
        notifier.post(_card(f"card {i}"))  # never blocks: the cards wait in the lane
    assert notifier.close(wait=DEADLINE) is True and not notifier.busy
    assert [r["attachments"][0]["content"]["body"][0]["text"] for r in http_webhook.requests] == [
        "card 0", "card 1", "card 2"
    ]
    assert threads and all(name.startswith("cvml-worker-") for name in threads)


def test_close_is_bounded_when_the_webhook_never_answers(silent_webhook, thread_errors):
    """A dead webhook never holds the caller past ``close``'s bound; the card still
    ends within its own timeout in the background, and the run warns once."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notifier = TeamsNotifier(silent_webhook, timeout=1, attempts=1)
        notifier.post(_card())
        assert notifier.close(wait=0.05) is False
        notifier._lane.wait()  # the card's own timeout ends it
    assert notifier.failed == 1 and not notifier.busy
    (warning,) = teams_warnings(caught)
    assert "not confirmed within 0.05 s" in str(warning.message)
    assert _leaks(str(warning.message), notifier.last_error) == []
    assert thread_errors == []


def test_the_plugin_object_keeps_each_runs_notifier_on_itself(http_webhook):
    """Two runs at once: each has its own notifier, found by the run object."""
    first = RunInfo(log_dir="runs/first", epochs=1, notify={"teams": http_webhook.url})
    second = RunInfo(log_dir="runs/second", epochs=1, notify={"teams": http_webhook.url})
    plugin = teams.TeamsPlugin()
    plugin.cvml_train_begin(first)
    plugin.cvml_train_begin(second)
    assert plugin.runs == [first, second]
    assert plugin.notifier_of(first) is not plugin.notifier_of(second)
    assert plugin.notifier_of(RunInfo(epochs=1, notify={"teams": http_webhook.url})) is None
    for run in (second, first):
        run.end_time = run.start_time + 1
        plugin.cvml_train_end(run, {}, None)
    assert plugin.runs == []
    titles = [
        (r["attachments"][0]["content"]["body"][1]["facts"][0]["value"],
         r["attachments"][0]["content"]["body"][0]["text"])
        for r in http_webhook.requests
    ]
    assert sorted(titles) == sorted(
        [(name, title) for name in ("first", "second")
         for title in ("Training started", "Training finished")]
    )


def test_the_installed_plugin_is_the_teams_plugin_object():
    registry = cvml_core.plugin_host.loader.get_registry()
    impls = {
        hook: [i for i in getattr(registry.pm.hook, hook).get_hookimpls()
               if i.plugin_name == "cvml-teams:teams"]
        for hook in ("cvml_validate_notify", "cvml_train_begin", "cvml_train_end")
    }
    for hook, (impl,) in impls.items():
        assert impl.function.__self__ is teams.plugin, hook


def test_a_runs_notify_urls_are_secret():
    url = f"{HOSTED}/workflows/{SECRET_PATH}?{SECRET}"
    run = RunInfo(notify={"teams": url, "other": url})
    assert _leaks(repr(run), run.masked_notify()) == []
    assert run.masked_notify() == {"teams": mask_url(url), "other": mask_url(url)}
