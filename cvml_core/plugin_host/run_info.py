"""What ``cvml_train_begin`` / ``cvml_train_end`` receive: the :class:`RunInfo` of a run,
and :func:`mask_url`, which hides the secret part of the URLs it may carry (each notifier
plugin checks its own URLs, see :mod:`cvml_core.plugin_host.notify`).

Pure Python: no TensorFlow import, so plugins on these hooks stay light.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cvml_core.artifacts.artifact import Artifact


def mask_url(url: str | None) -> str:
    """A URL safe to print: ``scheme://host/…`` and the last 4 characters, or ``""``.

    A webhook URL carries its secret in the path and query, so neither is shown.

    >>> mask_url("https://example.com/workflows/abc/triggers/xyz?sig=SECRET1234")
    'https://example.com/…1234'
    """
    if not url:
        return ""
    text = str(url)
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    tail = text[-4:] if len(text) > 12 else ""
    if parts is None or not parts.scheme or not host:
        return f"<url …{tail}>" if tail else "<url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}/…{tail}"


@dataclass
class RunInfo:
    """One ``TrainInfer.train`` run, as plugins see it.

    Filled at the start: ``log_dir`` (str or None), ``epochs`` (the last epoch, as
    passed to ``train``), ``start_epoch`` (epochs already done, 0 for a new run),
    ``basis_dict`` (the run's basis, merged from ``TrainInfer`` and its callbacks),
    ``callbacks`` (the names of the callbacks, registered name or class name),
    ``start_time`` (``time.time()``), ``notify`` (where notifier plugins post: a
    destination name -> URL mapping, e.g. ``{"teams": url}`` for the Teams plugin
    (``cvml-teams``); the URLs are secrets: ``repr`` hides them, print :meth:`masked_notify`),
    ``model_name``, ``chief`` (False on the non-chief tasks of a multi-worker
    ``tf.distribute`` run: a notifier should post from the chief only), ``host`` (this
    machine's name, ``socket.gethostname()``), ``restored_epoch`` and ``restored_by``
    (on a resume, ``start_epoch > 0``: the epoch whose weights were restored and the
    callback that restored them, or ``0`` and why nothing was restored; ``None`` and
    ``""`` for a new run or when the caller did not say). :attr:`run_name` names the run.

    Filled at the end, before ``cvml_train_end``: ``end_time``, ``epochs_done`` (the
    1-based number of the last finished epoch), ``history`` (metric name -> values of
    the epochs of this run), ``best`` (basis key -> ``{"value", "epoch"}``, the best
    known value: over this run's epochs and the bests the callbacks restored) and
    ``artifacts`` (the :class:`~cvml_core.artifacts.artifact.Artifact` records the callbacks
    wrote during this run, oldest first).
    """

    log_dir: str | None = None
    epochs: int = 0
    start_epoch: int = 0
    basis_dict: dict[str, str] = field(default_factory=dict)
    callbacks: list[str] = field(default_factory=list)
    start_time: float = field(default_factory=time.time)
    notify: dict[str, str] = field(default_factory=dict, repr=False)
    model_name: str = ""
    chief: bool = True
    host: str = field(default_factory=socket.gethostname)
    restored_epoch: int | None = None
    restored_by: str = ""
    end_time: float | None = None
    epochs_done: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    best: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)

    def masked_notify(self) -> dict[str, str]:
        """``notify`` with every URL's secret part hidden (see :func:`mask_url`)."""
        return {name: mask_url(url) for name, url in self.notify.items()}

    @property
    def run_name(self) -> str:
        """The run's name: the last folder of ``log_dir``, else the model name, else "run"."""
        if self.log_dir:
            name = os.path.basename(os.path.normpath(str(self.log_dir)))
            if name and name not in (".", os.sep):
                return name
        return self.model_name or "run"

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while the run is going on."""
        if self.end_time is None:
            return None
        return max(0.0, self.end_time - self.start_time)

    def latest_artifacts(self) -> list[Artifact]:
        """The newest artifact per (callback, kind, basis key): the files that stand."""
        return latest_artifacts(self.artifacts)


def latest_artifacts(artifacts: list[Artifact]) -> list[Artifact]:
    """The newest of ``artifacts`` per (callback, kind, basis key), in first-seen order."""
    latest: dict[tuple[str, str, str | None], Artifact] = {}
    for artifact in artifacts:
        latest[(artifact.callback, artifact.kind, artifact.basis_key)] = artifact
    return list(latest.values())
