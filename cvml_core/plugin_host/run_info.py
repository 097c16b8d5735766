"""The :class:`RunInfo` that ``cvml_train_begin`` / ``cvml_train_end`` receive, and
:func:`mask_url`, which hides the secrets of the URLs it carries. Pure Python."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cvml_core.artifacts.artifact import Artifact
from cvml_core.artifacts.storage import netloc


def mask_url(url: str | None) -> str:
    """A URL safe to print, ``scheme://host/…`` and its last 4 characters (a webhook's
    secret is in its path and query), or ``""``."""
    if not url:
        return ""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    tail = text[-4:] if len(text) > 12 else ""
    if parts is None or not parts.scheme or not parts.hostname:
        return f"<url …{tail}>" if tail else "<url>"
    return f"{parts.scheme}://{netloc(parts)}/…{tail}"


@dataclass
class RunInfo:
    """One ``TrainInfer.train`` run, as plugins see it; its fields: docs/train-infer.md
    ("Hooks"). ``notify`` (destination -> URL) holds secrets: ``repr`` hides it, print
    :meth:`masked_notify`; a notifier posts only where ``chief`` is True."""

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
        return None if self.end_time is None else max(0.0, self.end_time - self.start_time)

    def latest_artifacts(self) -> list[Artifact]:
        """The newest artifact per (callback, kind, basis key): the files that stand."""
        return latest_artifacts(self.artifacts)


def latest_artifacts(artifacts: list[Artifact]) -> list[Artifact]:
    """The newest of ``artifacts`` per (callback, kind, basis key), in first-seen order."""
    latest = {(a.callback, a.kind, a.basis_key): a for a in artifacts}
    return list(latest.values())
