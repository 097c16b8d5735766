"""The Teams notifier plugin: :data:`plugin`, on ``cvml_validate_notify``,
``cvml_train_begin`` and ``cvml_train_end``.

When a run carries a Teams webhook URL (``TrainInfer.train(..., teams_webhook_url=url)``,
``run.notify["teams"]``), :data:`plugin` checks it before epoch 1
(:func:`cvml_teams.webhook.validate_webhook_url`), then posts an Adaptive Card to it when
training starts, when it ends (final and best metrics, duration, artifact paths) and when
it fails (the exception and its traceback): see :mod:`cvml_teams.cards` for what the
cards say and :mod:`cvml_teams.webhook` for how they are delivered.

Delivery never stops training and slows it by at most the timeout: the start card is
posted on the shared background worker (``cvml_core.BackgroundWorker``); at the end,
training waits for the end card at most ``CVML_TEAMS_TIMEOUT`` seconds (default 10). A
failing webhook gives one ``RuntimeWarning`` per run, with the URL masked. Only the chief
of a multi-worker run posts.

The plugin is an object, :data:`plugin` (a :class:`TeamsPlugin`), named by the entry
point ``teams = "cvml_teams.hooks:plugin"`` in group ``cvml``; its per-run state (the run
and its notifier, from begin to end) lives on it. Standard library only: no TensorFlow
import.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from cvml_core import RunInfo, hookimpl
from cvml_teams.cards import end_card, failure_card, start_card
from cvml_teams.urls import WebhookURLError
from cvml_teams.webhook import TeamsNotifier, validate_webhook_url

__all__ = [
    "TeamsNotifier",
    "TeamsPlugin",
    "WebhookURLError",
    "plugin",
    "validate_webhook_url",
]

#: The name of the Teams destination in :attr:`cvml_core.plugin_host.run_info.RunInfo.notify`.
DESTINATION = "teams"


def webhook_of(run: Any) -> str | None:
    """The run's Teams webhook URL, ``run.notify["teams"]``, or None."""
    return (getattr(run, "notify", None) or {}).get(DESTINATION) or None


class TeamsPlugin:
    """Posts each run's start, end and failure cards to the run's Teams webhook.

    Runs may overlap (two ``TrainInfer`` in two threads): each has its own
    :class:`~cvml_teams.webhook.TeamsNotifier` from ``cvml_train_begin`` to
    ``cvml_train_end``, found by the run object itself (not by ``id``, which Python
    reuses once an object is gone).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: list[tuple[RunInfo, TeamsNotifier]] = []

    def notifier_of(self, run: RunInfo) -> TeamsNotifier | None:
        """The notifier of ``run`` between its begin and end hooks, else None."""
        with self._lock:
            return next((n for r, n in self._runs if r is run), None)

    @property
    def runs(self) -> list[RunInfo]:
        """The runs begun and not yet ended that post to Teams."""
        with self._lock:
            return [run for run, _ in self._runs]

    def _pop(self, run: RunInfo) -> TeamsNotifier | None:
        with self._lock:
            for i, (known, notifier) in enumerate(self._runs):
                if known is run:
                    del self._runs[i]
                    return notifier
        return None

    @hookimpl
    def cvml_validate_notify(self, destinations: Mapping[str, Any]) -> dict[str, Any] | None:
        """Check the ``"teams"`` destination, if there is one: its URL, or None when it
        is empty; raise :class:`WebhookURLError` (a ValueError) on a bad URL or setting."""
        if DESTINATION not in destinations:
            return None
        return {DESTINATION: validate_webhook_url(destinations[DESTINATION])}

    @hookimpl
    def cvml_train_begin(self, run: RunInfo) -> None:
        """Post the start card in the background, if the run has a Teams webhook URL."""
        url = webhook_of(run)
        if not url or not getattr(run, "chief", True):
            return
        notifier = TeamsNotifier(url)
        with self._lock:
            self._runs.append((run, notifier))
        notifier.post(start_card(run))

    @hookimpl
    def cvml_train_end(
        self, run: RunInfo, logs: Mapping[str, Any], error: BaseException | None
    ) -> None:
        """Post the end or failure card; wait for the run's cards at most the timeout."""
        notifier = self._pop(run)
        url = webhook_of(run)
        if not url or not getattr(run, "chief", True):
            return
        if notifier is None:  # begin was not seen (e.g. this plugin was loaded since)
            notifier = TeamsNotifier(url)
        try:
            notifier.post(end_card(run, logs) if error is None else failure_card(run, logs, error))
        finally:
            notifier.close()


#: The plugin object, named by the ``cvml`` entry point ``teams``.
plugin = TeamsPlugin()
