"""The built-in Teams notifier: a plugin on ``cvml_train_begin`` / ``cvml_train_end``.

When ``TrainInfer.train(..., teams_webhook_url=url)`` is given a URL, this plugin posts
an Adaptive Card to it when training starts, when it ends (final and best metrics,
duration, artifact paths) and when it fails (the exception and a short traceback).

The payload is what Teams "Workflows" webhooks (the "Post to a channel when a
webhook request is received" template, which replaced the retired Office 365
connectors) accept: a message whose attachments are Adaptive Cards::

    {"type": "message",
     "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                      "contentUrl": None,
                      "content": {"type": "AdaptiveCard", "version": "1.4",
                                  "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                                  "body": [...TextBlock / FactSet...]}}]}

Delivery never stops training and slows it by at most the timeout:

* the start card is posted on a background thread; at the end, training waits for
  the end card at most ``CVML_TEAMS_TIMEOUT`` seconds (default 10);
* each card gets that many seconds in all, for up to ``CVML_TEAMS_ATTEMPTS`` attempts
  (default 3) with a doubling pause (0.5 s, 1 s, ...) after a connection error, a
  timeout, HTTP 408, 429 or 5xx; any other 4xx is not retried, and the run's later
  cards are not sent;
* a run whose webhook fails gives one ``RuntimeWarning``, whatever the number of
  failures.

Only the chief of a multi-worker run posts. The URL is a secret: it is never
printed or logged in full (see :func:`cvml_core.run.mask_url`). It must be
``https://``, or ``http://`` to localhost, 127.0.0.1 or ::1 (a local relay, tests).

This module uses the standard library only: no TensorFlow import.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
import traceback
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cvml_core.hookspecs import hookimpl
from cvml_core.run import RunInfo, mask_url

ENV_TIMEOUT = "CVML_TEAMS_TIMEOUT"
ENV_ATTEMPTS = "CVML_TEAMS_ATTEMPTS"
DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPTS = 3
BACKOFF = 0.5
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
RETRY_STATUSES = frozenset({408, 429})
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
TRACEBACK_LINES = 12
TRACEBACK_CHARS = 1500


class WebhookURLError(ValueError):
    """``teams_webhook_url`` is not a URL the notifier may post to."""


def validate_webhook_url(url: Any) -> str | None:
    """Return the webhook URL to use, None when notifications are off, or raise.

    None and an empty string turn notifications off. Allowed: ``https://host/...``,
    and ``http://`` only to localhost, 127.0.0.1 or ::1. The error message shows
    the URL masked.
    """
    if url is None:
        return None
    if not isinstance(url, str):
        raise WebhookURLError(
            "teams_webhook_url must be a str (an https:// URL) or None. "
            f"Received: teams_webhook_url of type {type(url).__name__}"
        )
    url = url.strip()
    if not url:
        return None
    allowed = "https://..., or http:// only to localhost, 127.0.0.1 or ::1"
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise WebhookURLError(
            f"teams_webhook_url is not a valid URL ({exc}); allowed: {allowed}. "
            f"Received: teams_webhook_url={mask_url(url)!r}"
        ) from None
    scheme = parts.scheme.lower()
    if not host or scheme not in ("https", "http") or any(c.isspace() for c in url):
        raise WebhookURLError(
            f"teams_webhook_url must be a URL with a host; allowed: {allowed}. "
            f"Received: teams_webhook_url={mask_url(url)!r}"
        )
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise WebhookURLError(
            "teams_webhook_url must use https:// (the URL is a secret); http:// is "
            f"allowed only to localhost, 127.0.0.1 or ::1. "
            f"Received: teams_webhook_url={mask_url(url)!r}"
        )
    return url


def _env_number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a number >= {minimum}. Received: {name}={raw!r}")
    return value


# -- the cards -----------------------------------------------------------------------


def _number(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _facts(pairs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "FactSet",
        "facts": [{"title": str(k), "value": str(v)} for k, v in pairs.items()],
    }


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def adaptive_card_message(body: list[dict[str, Any]]) -> dict[str, Any]:
    """Wrap Adaptive Card ``body`` elements in the message a Workflows webhook accepts."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": CARD_SCHEMA,
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": body,
                },
            }
        ],
    }


def _header(title: str, run: RunInfo, color: str) -> list[dict[str, Any]]:
    subtitle = run.model_name or "model"
    if run.log_dir:
        subtitle += f" · {run.log_dir}"
    return [
        _text(title, size="Large", weight="Bolder", color=color),
        _text(subtitle, isSubtle=True, spacing="None"),
    ]


def start_card(run: RunInfo) -> dict[str, Any]:
    """The card posted when training starts."""
    facts = {
        "Epochs": (
            f"{run.start_epoch + 1} to {run.epochs} (resumed after epoch {run.start_epoch})"
            if run.start_epoch
            else f"1 to {run.epochs}"
        ),
        "Basis": ", ".join(f"{k} ({m})" for k, m in run.basis_dict.items()) or "-",
        "Callbacks": ", ".join(run.callbacks) or "-",
        "Started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(run.start_time)),
    }
    return adaptive_card_message(
        _header("Training started", run, "Accent") + [_facts(facts)]
    )


def _metrics_block(title: str, logs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    metrics = {k: _number(v) for k, v in (logs or {}).items()}
    if not metrics:
        return []
    return [_text(title, weight="Bolder", spacing="Medium"), _facts(metrics)]


def _best_block(run: RunInfo) -> list[dict[str, Any]]:
    if not run.best:
        return []
    rows = {}
    for key, best in run.best.items():
        mode = run.basis_dict.get(key, "")
        label = f"{key} ({mode})" if mode else key
        if best.get("value") is None:
            rows[label] = "no finite value yet"
        else:
            rows[label] = f"{_number(best['value'])} at epoch {best.get('epoch')}"
    return [_text("Best", weight="Bolder", spacing="Medium"), _facts(rows)]


def _artifacts_block(run: RunInfo) -> list[dict[str, Any]]:
    latest = run.latest_artifacts()
    if not latest:
        return []
    lines = []
    for artifact in latest:
        label = artifact.callback or "callback"
        label += f" {artifact.kind}"
        if artifact.basis_key:
            label += f" (best {artifact.basis_key})"
        lines.append(f"- {label}, epoch {artifact.epoch}: `{artifact.path}`")
    return [
        _text("Artifacts", weight="Bolder", spacing="Medium"),
        _text("\n".join(lines)),
    ]


def end_card(run: RunInfo, logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The card posted when training finished normally."""
    facts = {
        "Epochs": f"{run.epochs_done} of {run.epochs}",
        "Duration": _duration(run.duration),
    }
    body = _header("Training finished", run, "Good") + [_facts(facts)]
    body += _metrics_block("Final metrics", logs)
    body += _best_block(run)
    body += _artifacts_block(run)
    return adaptive_card_message(body)


def short_traceback(error: BaseException) -> str:
    """The last lines of ``error``'s traceback, at most :data:`TRACEBACK_CHARS` long."""
    lines = "".join(
        traceback.format_exception(type(error), error, error.__traceback__)
    ).rstrip().splitlines()
    text = "\n".join(lines[-TRACEBACK_LINES:])
    if len(text) > TRACEBACK_CHARS:
        text = "…" + text[-TRACEBACK_CHARS:]
    return text


def failure_card(
    run: RunInfo, logs: Mapping[str, Any] | None, error: BaseException
) -> dict[str, Any]:
    """The card posted when training raised (or was interrupted)."""
    interrupted = isinstance(error, KeyboardInterrupt)
    title = "Training interrupted" if interrupted else "Training failed"
    message = str(error).strip().splitlines()
    facts = {
        "Error": f"{type(error).__name__}: {message[0] if message else ''}".rstrip(": "),
        "Epochs done": f"{run.epochs_done} of {run.epochs}",
        "Duration": _duration(run.duration),
    }
    body = _header(title, run, "Attention") + [_facts(facts)]
    body += _metrics_block("Last metrics", logs)
    body += _best_block(run)
    body += _artifacts_block(run)
    body.append(_text("Traceback", weight="Bolder", spacing="Medium"))
    body.append(_text(short_traceback(error), fontType="Monospace", size="Small"))
    return adaptive_card_message(body)


# -- delivery ------------------------------------------------------------------------


class TeamsNotifier:
    """Posts cards to one webhook on a background thread, in order.

    ``post(payload)`` returns at once. ``close(wait)`` waits at most ``wait`` seconds
    for the cards still queued. Failures give one ``RuntimeWarning`` per notifier.
    """

    def __init__(
        self, url: str, timeout: float | None = None, attempts: int | None = None
    ) -> None:
        checked = validate_webhook_url(url)
        if checked is None:
            raise WebhookURLError("TeamsNotifier needs a webhook URL. Received: None")
        self.url = checked
        self.masked_url = mask_url(checked)
        self.timeout = (
            _env_number(ENV_TIMEOUT, DEFAULT_TIMEOUT, 0.01) if timeout is None else timeout
        )
        self.attempts = int(
            _env_number(ENV_ATTEMPTS, DEFAULT_ATTEMPTS, 1) if attempts is None else attempts
        )
        host = (urlsplit(checked).hostname or "").lower()
        # A loopback relay must not go through a proxy set in the environment.
        handlers = [urllib.request.ProxyHandler({})] if host in LOOPBACK_HOSTS else []
        self._opener = urllib.request.build_opener(*handlers)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._warned = False
        self._gave_up = False
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._loop, name="cvml-teams", daemon=True)
        self._thread.start()

    def post(self, payload: dict[str, Any]) -> None:
        """Queue ``payload`` for delivery; never blocks, never raises."""
        self._queue.put(payload)

    def close(self, wait: float | None = None) -> bool:
        """Stop after the queued cards; wait at most ``wait`` (default: the timeout).

        Returns whether every queued card was handled (sent or given up) in time.
        """
        self._queue.put(None)
        self._thread.join(self.timeout if wait is None else wait)
        if self._thread.is_alive():
            self._warn_once(
                f"not confirmed within {_number(self.timeout)} s (webhook slow or not "
                "answering)"
            )
            return False
        return True

    def _warn_once(self, reason: str) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        warnings.warn(
            f"Teams notification to {self.masked_url} failed: {reason}. Training goes on; "
            "later notification failures of this run are not reported.",
            RuntimeWarning,
            stacklevel=2,
        )

    def _loop(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            if self._gave_up:
                continue
            ok, reason, retry = self.send(payload)
            if ok:
                self.sent += 1
                continue
            self.failed += 1
            if not retry:
                self._gave_up = True
            self._warn_once(reason)

    def send(self, payload: dict[str, Any]) -> tuple[bool, str, bool]:
        """Post one card now: ``(delivered, reason, worth_retrying_later)``.

        All attempts together take at most about ``timeout`` seconds.
        """
        data = json.dumps(payload).encode("utf-8")
        deadline = time.monotonic() + self.timeout
        reason = "no attempt made"
        for attempt in range(self.attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            request = urllib.request.Request(
                self.url,
                data=data,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "cvml-teams"},
            )
            try:
                with self._opener.open(request, timeout=remaining) as response:
                    response.read(65536)
                    status = response.status
                if 200 <= status < 300:
                    return True, "", True
                reason = f"HTTP {status}"
                retryable = False
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code}"
                retryable = exc.code >= 500 or exc.code in RETRY_STATUSES
                exc.close()
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                cause = getattr(exc, "reason", None) or exc
                reason = f"{type(cause).__name__}: {cause}".replace(self.url, self.masked_url)
                retryable = True
            reason += f" after {attempt + 1} attempt(s)"
            if not retryable:
                return False, reason, False
            pause = BACKOFF * (2**attempt)
            if attempt + 1 >= self.attempts or time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
        return False, reason, True


# -- the plugin ----------------------------------------------------------------------

_active: dict[int, TeamsNotifier] = {}
_active_lock = threading.Lock()


@hookimpl
def cvml_train_begin(run: RunInfo) -> None:
    """Post the start card in the background, if the run has a webhook URL."""
    url = getattr(run, "webhook_url", None)
    if not url or not getattr(run, "chief", True):
        return
    notifier = TeamsNotifier(url)
    with _active_lock:
        _active[id(run)] = notifier
    notifier.post(start_card(run))


@hookimpl
def cvml_train_end(run: RunInfo, logs: Mapping[str, Any], error: BaseException | None) -> None:
    """Post the end or failure card; wait for it at most the timeout."""
    with _active_lock:
        notifier = _active.pop(id(run), None)
    url = getattr(run, "webhook_url", None)
    if not url or not getattr(run, "chief", True):
        return
    if notifier is None:
        notifier = TeamsNotifier(url)
    if error is None:
        notifier.post(end_card(run, logs))
    else:
        notifier.post(failure_card(run, logs, error))
    notifier.close()
