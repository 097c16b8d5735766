"""The built-in Teams notifier: a plugin on ``cvml_train_begin`` / ``cvml_train_end``.

When ``TrainInfer.train(..., teams_webhook_url=url)`` is given a URL, this plugin posts
an Adaptive Card to it when training starts, when it ends (final and best metrics,
duration, artifact paths) and when it fails (the exception and its traceback). Every
card names the run and the host that ran it.

The payload is what Teams "Workflows" webhooks (the "Post to a channel when a
webhook request is received" template, which replaced the retired Office 365
connectors) accept: a message whose attachments are Adaptive Cards::

    {"type": "message",
     "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                      "contentUrl": None,
                      "content": {"type": "AdaptiveCard", "version": "1.4",
                                  "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                                  "msteams": {"width": "Full"},
                                  "body": [...TextBlock / FactSet...]}}]}

Text: TextBlocks and facts are Adaptive Card markdown (a CommonMark subset). Every
value that comes from the run (paths, names, metrics, error messages, tracebacks) is
escaped with CommonMark backslash escapes (:func:`md_escape`), so ``__cache__`` stays
``__cache__`` and paths show as they are. Lines are separated by a blank line, the
line break Teams renders; leading spaces become no-break spaces (indentation kept).

Delivery never stops training and slows it by at most the timeout:

* the start card is posted on a background thread; at the end, training waits for
  the end card at most ``timeout`` seconds (``CVML_TEAMS_TIMEOUT``, default 10);
* each card gets that many seconds in all, for up to ``attempts`` attempts
  (``CVML_TEAMS_ATTEMPTS``, default 3). After a connection error, a timeout, a
  malformed or cut-off answer, HTTP 408, 429 or 5xx it tries again after a doubling
  pause (0.5 s, 1 s, ...), or after the server's ``Retry-After`` when it sends one and
  it fits in the card's remaining time (otherwise it stops there). A redirect or any
  other 4xx is not retried, and the run's later cards are not sent;
* every exception raised while posting is caught per card and counted as a failure;
  a run whose webhook fails gives one ``RuntimeWarning``, whatever the number of
  failures, and :meth:`TeamsNotifier.close` returns False.

Only the chief of a multi-worker run posts. The URL is a secret: it is never
printed or logged in full (see :func:`cvml_core.run.mask_url`); failure reasons name
the exception type and a fixed description, never the exception text that could
contain the URL. It must be ``https://``, or ``http://`` to localhost, 127.0.0.1 or
::1 (a local relay, tests), printable ASCII without spaces, credentials
(``user:password@``) or a ``#fragment``.

This module uses the standard library only: no TensorFlow import.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import os
import queue
import re
import ssl
import string
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
#: The most characters of traceback a failure card carries (whole frames only).
TRACEBACK_CHARS = 4000
#: The most characters of the error message in the failure card's "Error" fact.
ERROR_CHARS = 300
URL_RULES = (
    "https://host/..., or http:// only to localhost, 127.0.0.1 or ::1; printable ASCII "
    "without spaces, credentials (user:password@) or a #fragment"
)


class WebhookURLError(ValueError):
    """``teams_webhook_url`` is not a URL the notifier may post to."""


def _url_error(problem: str, url: str) -> WebhookURLError:
    return WebhookURLError(
        f"teams_webhook_url {problem}; allowed: {URL_RULES}. "
        f"Received: teams_webhook_url={mask_url(url)!r}"
    )


def validate_webhook_url(url: Any) -> str | None:
    """Return the webhook URL to use, None when notifications are off, or raise.

    None and an empty string turn notifications off; surrounding spaces and line
    breaks (a pasted URL) are dropped. Allowed: ``https://host/...``, and ``http://``
    only to localhost, 127.0.0.1 or ::1, in printable ASCII with no space, no control
    character, no ``user:password@`` and no ``#fragment``. When there is a URL, the
    settings ``CVML_TEAMS_TIMEOUT`` and ``CVML_TEAMS_ATTEMPTS`` are checked too, so a
    bad one fails here, at the start of a run, rather than turning notifications off.
    Error messages show the URL masked.
    """
    checked = _check_url(url)
    if checked is not None:
        env_timeout()
        env_attempts()
    return checked


def _check_url(url: Any) -> str | None:
    """:func:`validate_webhook_url` without the settings."""
    if url is None:
        return None
    if not isinstance(url, str):
        raise WebhookURLError(
            "teams_webhook_url must be a str (an https:// URL) or None. "
            f"Received: teams_webhook_url of type {type(url).__name__}"
        )
    url = url.strip(" \t\r\n")
    if not url:
        return None
    for position, char in enumerate(url):
        if not 0x21 <= ord(char) <= 0x7E:
            if char == " ":
                what = "a space"
            elif ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F:
                what = "a control character"
            elif char.isspace():
                what = "a space character"
            else:
                what = "a non-ASCII character (percent-encode it)"
            raise _url_error(f"contains {what}, U+{ord(char):04X} at position {position}", url)
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _url_error("cannot be parsed as a URL (a bad port or [IPv6] brackets)", url) from None
    scheme = parts.scheme.lower()
    if not host or scheme not in ("https", "http"):
        raise _url_error("must be an https:// URL with a host", url)
    if "@" in parts.netloc:
        raise _url_error("must not contain credentials (user:password@)", url)
    if "#" in url:
        raise _url_error(
            "must not contain a #fragment (it is never sent to the server: the URL may "
            "be cut or mistyped)",
            url,
        )
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise _url_error(
            "must use https:// (the URL is a secret); http:// is allowed only to "
            "localhost, 127.0.0.1 or ::1",
            url,
        )
    return url


# -- settings ------------------------------------------------------------------------


def check_timeout(value: Any, name: str = "timeout") -> float:
    """``value`` as a timeout in seconds: a finite number > 0, else ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{name} must be a finite number of seconds > 0. Received: {name}={value!r}"
        )
    return float(value)


def check_attempts(value: Any, name: str = "attempts") -> int:
    """``value`` as a number of attempts: an integer >= 1, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1. Received: {name}={value!r}")
    return int(value)


def env_timeout() -> float:
    """``CVML_TEAMS_TIMEOUT`` (default 10 s); a bad value is a ValueError naming it."""
    raw = os.environ.get(ENV_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value: Any = float(raw)
    except ValueError:
        value = raw
    if isinstance(value, str) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{ENV_TIMEOUT} must be a finite number of seconds > 0 (default "
            f"{DEFAULT_TIMEOUT:g}). Received: {ENV_TIMEOUT}={raw!r}"
        )
    return float(value)


def env_attempts() -> int:
    """``CVML_TEAMS_ATTEMPTS`` (default 3); a bad value is a ValueError naming it."""
    raw = os.environ.get(ENV_ATTEMPTS, "").strip()
    if not raw:
        return DEFAULT_ATTEMPTS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"{ENV_ATTEMPTS} must be an integer >= 1 (default {DEFAULT_ATTEMPTS}). "
            f"Received: {ENV_ATTEMPTS}={raw!r}"
        )
    return int(raw)


# -- Adaptive Card markdown ----------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
# Inline markup anywhere in a line: emphasis, strikethrough, code, links, HTML, entities.
_ALWAYS = frozenset("`*~[]<>&")
_ORDERED = re.compile(r"(\d{1,9})([.)])(?=[ \t]|$)")
_UNDERSCORES = re.compile(r"_+")


def _inword(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` sits between two letters or digits (``best_val``)."""
    return 0 < start and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()


def _escape_line(line: str) -> str:
    body = line.lstrip(" \t")
    indent = line[: len(line) - len(body)].replace("\t", "    ")
    # Underscores inside a word never make emphasis in CommonMark: only the others
    # (``__cache__``, ``_x``) are escaped, so names like best_val_loss stay as they are.
    literal: set[int] = set()
    for run in _UNDERSCORES.finditer(body):
        if _inword(body, run.start(), run.end()):
            literal.update(range(run.start(), run.end()))
    out = []
    for i, char in enumerate(body):
        after = body[i + 1 : i + 2]
        if (
            char in _ALWAYS
            or (char == "_" and i not in literal)
            or (char == "\\" and (not after or after in _PUNCTUATION))
        ):
            out.append("\\" + char)
        else:
            out.append(char)
    text = "".join(out)
    # Block markers at the start of a line: headings, lists, thematic breaks, setext.
    first, second = text[:1], text[1:2]
    marker = first in ("-", "+", "=") and (second in ("", " ", "\t") or set(text) <= {first, " "})
    if first == "#" or marker:
        text = "\\" + text
    else:
        match = _ORDERED.match(text)
        if match:
            text = match.group(1) + "\\" + text[match.end(1):]
    # Leading spaces would start a code block or vanish: keep them as no-break spaces.
    return "\u00a0" * len(indent) + text


def md_escape(text: Any, newline: str = "\n\n") -> str:
    """``text`` as literal Adaptive Card markdown.

    Markdown characters are backslash-escaped (CommonMark escapes), leading spaces
    become no-break spaces, and lines are joined by ``newline``: a blank line by
    default, the line break Teams renders (a single newline shows as a space).
    """
    lines = str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return newline.join(_escape_line(line) for line in lines)


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
    """A FactSet; titles and values are escaped, a multi-line value joined by spaces."""
    return {
        "type": "FactSet",
        "facts": [
            {"title": md_escape(k, " "), "value": md_escape(v, " ")} for k, v in pairs.items()
        ],
    }


def _text(text: str, **style: Any) -> dict[str, Any]:
    """A TextBlock of ``text`` as it is (markdown): escape what comes from the run."""
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


def _run_facts(run: RunInfo) -> dict[str, Any]:
    facts: dict[str, Any] = {"Run": run.run_name, "Host": run.host or "-"}
    if run.model_name and run.model_name != run.run_name:
        facts["Model"] = run.model_name
    if run.log_dir:
        facts["Log dir"] = run.log_dir
    return facts


def _title(title: str, color: str) -> dict[str, Any]:
    return _text(title, size="Large", weight="Bolder", color=color)


def resume_text(run: RunInfo) -> str | None:
    """What a resumed run restored, in words; None for a new run."""
    start = run.start_epoch
    if not start:
        return None
    if run.restored_epoch is None:
        return f"after epoch {start} (start_epoch={start}; what was restored is not known)"
    if run.restored_epoch <= 0:
        why = run.restored_by or "no checkpoint was found"
        return (
            f"after epoch {start}, but nothing was restored ({why}): training went on "
            "from the model's current weights"
        )
    by = f" by {run.restored_by}" if run.restored_by else ""
    if run.restored_epoch < start:
        return (
            f"after epoch {start}, from the weights of epoch {run.restored_epoch} (the "
            f"latest checkpoint up to epoch {start}), restored{by}"
        )
    return f"after epoch {start}: the weights of epoch {run.restored_epoch} restored{by}"


def start_card(run: RunInfo) -> dict[str, Any]:
    """The card posted when training starts."""
    facts = _run_facts(run)
    facts["Epochs"] = f"{run.start_epoch + 1} to {run.epochs}"
    resumed = resume_text(run)
    if resumed:
        facts["Resumed"] = resumed
    facts["Basis"] = ", ".join(f"{k} ({m})" for k, m in run.basis_dict.items()) or "-"
    facts["Callbacks"] = ", ".join(run.callbacks) or "-"
    facts["Started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(run.start_time))
    return adaptive_card_message([_title("Training started", "Accent"), _facts(facts)])


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
        lines.append(f"- {md_escape(label, ' ')}, epoch {artifact.epoch}: "
                     f"{md_escape(artifact.path, ' ')}")
    return [
        _text("Artifacts", weight="Bolder", spacing="Medium"),
        _text("\n".join(lines)),  # a markdown list: one item per line
    ]


def end_card(run: RunInfo, logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The card posted when training finished normally."""
    facts = _run_facts(run)
    facts["Epochs"] = f"{run.epochs_done} of {run.epochs}"
    facts["Duration"] = _duration(run.duration)
    body = [_title("Training finished", "Good"), _facts(facts)]
    body += _metrics_block("Final metrics", logs)
    body += _best_block(run)
    body += _artifacts_block(run)
    return adaptive_card_message(body)


def traceback_text(error: BaseException, limit: int = TRACEBACK_CHARS) -> str:
    """``error``'s traceback (with its chained causes) in at most about ``limit`` characters.

    The exception lines always come; then as many whole entries (frames, chain
    headers) as fit, nearest the error first. What does not fit is said in a first
    line, never cut mid-frame. An exception text longer than ``limit`` is cut with "…".
    """
    formatted = traceback.TracebackException.from_exception(error)
    chunks = list(formatted.format())
    tail_lines = list(formatted.format_exception_only())
    count = len(tail_lines)
    if count and "".join(chunks[-count:]) == "".join(tail_lines):
        body, tail = chunks[:-count], "".join(tail_lines)
    else:  # an unusual layout: the last chunk is the exception
        body, tail = chunks[:-1], "".join(chunks[-1:])
    if len(tail) > limit:
        tail = tail[: max(1, limit - 1)].rstrip() + "…\n"
    room = limit - len(tail)
    kept: list[str] = []
    for chunk in reversed(body):
        if len(chunk) > room:
            break
        kept.append(chunk)
        room -= len(chunk)
    omitted = body[: len(body) - len(kept)]
    head = []
    if omitted:
        frames = sum(1 for chunk in omitted if chunk.lstrip().startswith("File "))
        lines = "".join(omitted).count("\n")
        head.append(
            f"… the first {lines} lines ({frames} frames) of the traceback are not "
            "shown (card size limit) …\n"
        )
    return "".join(head + kept[::-1] + [tail]).rstrip("\n")


def failure_card(
    run: RunInfo, logs: Mapping[str, Any] | None, error: BaseException
) -> dict[str, Any]:
    """The card posted when training raised (or was interrupted)."""
    interrupted = isinstance(error, KeyboardInterrupt)
    title = "Training interrupted" if interrupted else "Training failed"
    message = str(error).strip().splitlines()
    first = message[0] if message else ""
    if len(first) > ERROR_CHARS:
        first = first[: ERROR_CHARS - 1] + "…"
    facts = _run_facts(run)
    facts["Error"] = f"{type(error).__name__}: {first}".rstrip(": ")
    facts["Epochs done"] = f"{run.epochs_done} of {run.epochs}"
    facts["Duration"] = _duration(run.duration)
    body = [_title(title, "Attention"), _facts(facts)]
    body += _metrics_block("Last metrics", logs)
    body += _best_block(run)
    body += _artifacts_block(run)
    body.append(_text("Traceback", weight="Bolder", spacing="Medium"))
    body.append(_text(md_escape(traceback_text(error)), fontType="Monospace", size="Small"))
    return adaptive_card_message(body)


# -- delivery ------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook POST is never redirected (urllib would turn it into a GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = str(value).strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class TeamsNotifier:
    """Posts cards to one webhook on a background thread, in order.

    ``post(payload)`` returns at once. ``close(wait)`` waits at most ``wait`` seconds
    for the cards still queued and says whether every card was delivered.
    ``timeout`` (seconds per card, all attempts included; default
    ``CVML_TEAMS_TIMEOUT`` or 10) must be a finite number > 0, ``attempts`` (default
    ``CVML_TEAMS_ATTEMPTS`` or 3) an integer >= 1.

    Its state: ``sent``, ``failed`` (cards given up after their attempts),
    ``skipped`` (cards not tried because an earlier one failed for good),
    ``last_error`` (the reason of the last failure, URL masked) and ``pauses`` (the
    seconds waited between attempts). Failures give one ``RuntimeWarning`` per notifier.
    """

    def __init__(
        self, url: str, timeout: float | None = None, attempts: int | None = None
    ) -> None:
        checked = _check_url(url)
        if checked is None:
            raise WebhookURLError(
                f"TeamsNotifier needs a webhook URL; allowed: {URL_RULES}. "
                f"Received: url={url!r}"
            )
        self.url = checked
        self.masked_url = mask_url(checked)
        self.timeout = env_timeout() if timeout is None else check_timeout(timeout)
        self.attempts = env_attempts() if attempts is None else check_attempts(attempts)
        parts = urlsplit(checked)
        self._secrets = sorted(
            {s for s in (checked, parts.path + "?" + parts.query, parts.path, parts.query)
             if len(s) > 1},
            key=len,
            reverse=True,
        )
        host = (parts.hostname or "").lower()
        handlers: list[Any] = [_NoRedirect()]
        # A loopback relay must not go through a proxy set in the environment.
        if host in LOOPBACK_HOSTS:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._warned = False
        self._gave_up = False
        self.sent = 0
        self.failed = 0
        self.skipped = 0
        self.last_error = ""
        self.pauses: list[float] = []
        self._thread = threading.Thread(target=self._loop, name="cvml-teams", daemon=True)
        self._thread.start()

    def post(self, payload: dict[str, Any]) -> None:
        """Queue ``payload`` for delivery; never blocks, never raises."""
        self._queue.put(payload)

    def close(self, wait: float | None = None) -> bool:
        """Stop after the queued cards; wait at most ``wait`` (default: the timeout).

        Returns True when every card posted was delivered in time; False when one
        failed, was skipped, or was not confirmed within ``wait``.
        """
        self._queue.put(None)
        self._thread.join(self.timeout if wait is None else wait)
        if self._thread.is_alive():
            self._warn_once(
                f"not confirmed within {_number(self.timeout)} s (webhook slow or not "
                "answering)"
            )
            return False
        return self.failed == 0 and self.skipped == 0

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "…")
        return text

    def _warn_once(self, reason: str) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        warnings.warn(
            f"Teams notification to {self.masked_url} failed: {self._mask(reason)}. "
            "Training goes on; later notification failures of this run are not reported.",
            RuntimeWarning,
            stacklevel=2,
        )

    def _loop(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            if self._gave_up:
                self.skipped += 1
                continue
            try:
                ok, reason, later = self.send(payload)
            except Exception as exc:  # never let the thread die with a card unposted
                ok, reason, later = False, f"unexpected {type(exc).__name__}", True
            if ok:
                self.sent += 1
                continue
            self.failed += 1
            self.last_error = self._mask(reason)
            if not later:
                self._gave_up = True
            self._warn_once(reason)

    def _describe(self, exc: BaseException) -> tuple[str, bool]:
        """``(reason, worth retrying)`` for an exception raised while posting.

        The reason is the exception type and a fixed text (or an OS error string),
        never the exception's own message, which may quote the URL.
        """
        if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
            return self._describe(exc.reason)
        name = type(exc).__name__
        if isinstance(exc, TimeoutError):
            return f"{name}: no answer in time", True
        if isinstance(exc, http.client.RemoteDisconnected):
            return f"{name}: the connection closed without an answer", True
        if isinstance(exc, http.client.IncompleteRead):
            return f"{name}: the answer was cut off", True
        if isinstance(exc, http.client.BadStatusLine):
            return f"{name}: the answer's status line is malformed", True
        if isinstance(exc, http.client.InvalidURL):
            return f"{name}: the URL was refused by http.client", False
        if isinstance(exc, http.client.HTTPException):
            return f"{name}: a malformed answer", True
        if isinstance(exc, ssl.SSLError):
            return f"{name}: {getattr(exc, 'reason', None) or 'TLS failure'}", True
        if isinstance(exc, OSError):
            detail = exc.strerror if isinstance(exc.strerror, str) else ""
            return (f"{name}: {detail}" if detail else name), True
        if isinstance(exc, urllib.error.URLError):
            return name, True
        return name, False

    def _post_once(self, data: bytes, timeout: float) -> int:
        request = urllib.request.Request(
            self.url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "cvml-teams"},
        )
        with self._opener.open(request, timeout=timeout) as response:
            response.read(65536)
            return int(response.status)

    def send(self, payload: dict[str, Any]) -> tuple[bool, str, bool]:
        """Post one card now: ``(delivered, reason, later cards worth sending)``.

        All attempts together take at most about ``timeout`` seconds. Never raises.
        """
        try:
            data = json.dumps(payload, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            return False, f"the card is not valid JSON ({type(exc).__name__})", True
        deadline = time.monotonic() + self.timeout
        reason = "no attempt made"
        for attempt in range(self.attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait: float | None = None
            status = 0
            try:
                status = self._post_once(data, remaining)
            except urllib.error.HTTPError as exc:
                status = exc.code
                wait = retry_after(exc.headers)
                try:
                    exc.close()
                except Exception:  # the body is not needed
                    pass
            except Exception as exc:  # every failure of a post is counted, never raised
                reason, retryable = self._describe(exc)
            if 200 <= status < 300:
                return True, "", True
            if status:
                reason = f"HTTP {status}"
                if 300 <= status < 400:
                    reason += " (a redirect: webhook posts are not redirected)"
                retryable = status >= 500 or status in RETRY_STATUSES
            reason += f" after {attempt + 1} attempt(s)"
            if not retryable:  # a wrong URL: the run's later cards would fail the same way
                return False, reason, False
            if attempt + 1 >= self.attempts:
                break
            pause = BACKOFF * (2**attempt) if wait is None else wait
            left = deadline - time.monotonic()
            if pause >= left:
                if wait is not None:
                    reason += (
                        f"; Retry-After {_number(wait)} s is beyond the {_number(left)} s "
                        "left for this card"
                    )
                break
            self.pauses.append(pause)
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
    try:
        if error is None:
            notifier.post(end_card(run, logs))
        else:
            notifier.post(failure_card(run, logs, error))
    finally:
        notifier.close()
