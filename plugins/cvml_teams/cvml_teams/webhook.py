"""Delivery of Teams cards to one webhook: in order, with retries, never into training.

:class:`TeamsNotifier` posts JSON payloads through its own lane of the shared background
worker (:mod:`cvml_core.artifacts.worker`): ``post`` never blocks, cards go out one at a time in
the order posted, and ``close`` waits for them at most a bound, so a dead webhook
never holds the process:

* each card gets ``timeout`` seconds in all (``CVML_TEAMS_TIMEOUT``, default 10), for
  up to ``attempts`` attempts (``CVML_TEAMS_ATTEMPTS``, default 3). After a connection
  error, a timeout, a malformed or cut-off answer, HTTP 408, 429 or 5xx it tries again
  after a doubling pause (0.5 s, 1 s, ...), or after the server's ``Retry-After`` when
  it sends one and it fits in the card's remaining time (otherwise it stops there). A
  redirect (never followed) or any other 4xx is not retried, and the later cards are
  not sent;
* every exception raised while posting is caught per card and counted as a failure;
  a notifier whose webhook fails gives one ``RuntimeWarning``, whatever the number of
  failures, and :meth:`TeamsNotifier.close` returns False.

The URL is a secret: it is never printed or logged in full (see
:func:`cvml_core.plugin_host.run_info.mask_url`); failure reasons name the exception
type and a fixed description, never the exception text that could contain the URL. The URL rules are
:func:`cvml_teams.urls.check_webhook_url`; :func:`validate_webhook_url`
checks them and the settings above. Standard library only: no TensorFlow import.

Over 300 lines on purpose: settings, retry rules and failure descriptions are one
delivery policy, read and tested together (``tests/teams/test_teams_faults.py``).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
import warnings
from typing import Any
from urllib.parse import urlsplit

from cvml_core import BackgroundWorker
from cvml_teams.urls import (
    LOOPBACK_HOSTS,
    URL_RULES,
    WebhookURLError,
    check_webhook_url,
    mask_url,
)

ENV_TIMEOUT = "CVML_TEAMS_TIMEOUT"
ENV_ATTEMPTS = "CVML_TEAMS_ATTEMPTS"
DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPTS = 3
BACKOFF = 0.5
RETRY_STATUSES = frozenset({408, 429})


def validate_webhook_url(url: Any) -> str | None:
    """Return the webhook URL to use, None when notifications are off, or raise.

    The URL rules are :func:`cvml_teams.urls.check_webhook_url`'s (a
    :class:`~cvml_teams.urls.WebhookURLError` shows the URL masked). When
    there is a URL, the settings ``CVML_TEAMS_TIMEOUT`` and ``CVML_TEAMS_ATTEMPTS`` are
    checked too, so a bad one fails here, at the start of a run, rather than turning
    notifications off.
    """
    checked = check_webhook_url(url)
    if checked is not None:
        env_timeout()
        env_attempts()
    return checked


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


def describe_failure(exc: BaseException) -> tuple[str, bool]:
    """``(reason, worth retrying)`` for an exception raised while posting.

    The reason is the exception type and a fixed text (or an OS error string), never
    the exception's own message, which may quote the URL.
    """
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return describe_failure(exc.reason)
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


def _seconds(value: float) -> str:
    return f"{value:.4g}"


class TeamsNotifier:
    """Posts JSON payloads (cards) to one webhook, in order, on the shared worker.

    ``post(payload)`` returns at once. ``close(wait)`` waits at most ``wait`` seconds
    (default: ``timeout``) for the cards still queued and says whether every card was
    delivered. ``timeout`` (seconds per card, all attempts included; default
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
        checked = check_webhook_url(url)
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
        handlers: list[Any] = [_NoRedirect()]
        # A loopback relay must not go through a proxy set in the environment.
        if (parts.hostname or "").lower() in LOOPBACK_HOSTS:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        # Every card waits its turn: a lane without backlog limit never drops one.
        self._lane = BackgroundWorker(f"teams {self.masked_url}", backlog=None)
        self._lock = threading.Lock()
        self._warned = False
        self._gave_up = False
        self.sent = 0
        self.failed = 0
        self.skipped = 0
        self.last_error = ""
        self.pauses: list[float] = []

    @property
    def busy(self) -> bool:
        """Whether a card is being posted or waits to be."""
        return self._lane.busy

    def post(self, payload: dict[str, Any]) -> None:
        """Queue ``payload`` for delivery; never blocks, never raises."""
        self._lane.submit("Teams card", lambda: self._deliver(payload))

    def close(self, wait: float | None = None) -> bool:
        """Wait at most ``wait`` seconds (default: the timeout) for the queued cards.

        Returns True when every card posted was delivered in time; False when one
        failed, was skipped, or was not confirmed within ``wait``. Cards not confirmed
        in time are still posted in the background (each within its timeout).
        """
        bound = self.timeout if wait is None else wait
        if not self._lane.wait(raise_error=False, timeout=bound):
            self._warn_once(
                f"not confirmed within {_seconds(bound)} s (webhook slow or not answering)"
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

    def _deliver(self, payload: dict[str, Any]) -> None:
        """On the worker: post one card, or skip it after a failure for good."""
        if self._gave_up:
            self.skipped += 1
            return
        try:
            ok, reason, later = self.send(payload)
        except Exception as exc:  # never let a card's failure reach the worker
            ok, reason, later = False, f"unexpected {type(exc).__name__}", True
        if ok:
            self.sent += 1
            return
        self.failed += 1
        self.last_error = self._mask(reason)
        if not later:
            self._gave_up = True
        self._warn_once(reason)

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
                reason, retryable = describe_failure(exc)
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
                        f"; Retry-After {_seconds(wait)} s is beyond the {_seconds(left)} s "
                        "left for this card"
                    )
                break
            self.pauses.append(pause)
            time.sleep(pause)
        return False, reason, True

