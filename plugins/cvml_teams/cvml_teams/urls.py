"""The rules for a Teams webhook URL (a secret: checked here, shown masked).

Standard library and ``cvml_core``'s :func:`~cvml_core.plugin_host.run_info.mask_url` only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from cvml_core.plugin_host.run_info import mask_url

__all__ = ["LOOPBACK_HOSTS", "URL_RULES", "WebhookURLError", "check_webhook_url", "mask_url"]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
URL_RULES = (
    "https://host/..., or http:// only to localhost, 127.0.0.1 or ::1; printable ASCII "
    "without spaces, credentials (user:password@) or a #fragment"
)


class WebhookURLError(ValueError):
    """A webhook URL (``teams_webhook_url``) is not a URL a notifier may post to."""


def _url_error(problem: str, url: str, name: str) -> WebhookURLError:
    return WebhookURLError(
        f"{name} {problem}; allowed: {URL_RULES}. Received: {name}={mask_url(url)!r}"
    )


def check_webhook_url(url: Any, name: str = "teams_webhook_url") -> str | None:
    """Return the webhook URL to use, None when notifications are off, or raise.

    None and an empty string turn notifications off; surrounding spaces and line
    breaks (a pasted URL) are dropped. Allowed: ``https://host/...``, and ``http://``
    only to localhost, 127.0.0.1 or ::1, in printable ASCII with no space, no control
    character, no ``user:password@`` and no ``#fragment``. Errors name the argument
    ``name`` and show the URL masked (:func:`mask_url`).
    """
    if url is None:
        return None
    if not isinstance(url, str):
        raise WebhookURLError(
            f"{name} must be a str (an https:// URL) or None. "
            f"Received: {name} of type {type(url).__name__}"
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
            raise _url_error(f"contains {what}, U+{ord(char):04X} at position {position}",
                             url, name)
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _url_error("cannot be parsed as a URL (a bad port or [IPv6] brackets)",
                         url, name) from None
    scheme = parts.scheme.lower()
    if not host or scheme not in ("https", "http"):
        raise _url_error("must be an https:// URL with a host", url, name)
    if "@" in parts.netloc:
        raise _url_error("must not contain credentials (user:password@)", url, name)
    if "#" in url:
        raise _url_error(
            "must not contain a #fragment (it is never sent to the server: the URL may "
            "be cut or mistyped)",
            url, name,
        )
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise _url_error(
            "must use https:// (the URL is a secret); http:// is allowed only to "
            "localhost, 127.0.0.1 or ::1",
            url, name,
        )
    return url
